"""``sayno glasses ...``: train, fine-tune the baseline and explain.

``sayno/cli.py`` calls :func:`register`, which adds the ``glasses`` group. The world report (``sayno glasses
report`` and the report after ``train``) belongs to the eval layer, which this package may not import: the
top-level CLI passes it in as ``report_hook``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sayno.backbones.registry import load
from sayno.cliutil import cli_errors, console, subgroup
from sayno.features import FeatureCache
from sayno.glasses.config import GlassesConfig
from sayno.glasses.finetune import FinetuneConfig, finetune_text
from sayno.glasses.model import load_glasses
from sayno.glasses.paper import PaperGlassesConfig
from sayno.glasses.paper_train import PAPER_STAGES, PaperTrainConfig, train_paper_glasses
from sayno.glasses.train import TrainConfig, check_model_config, check_output_file, train_glasses

HELP = "CLIPGlasses: negation-aware scoring on a frozen CLIP."
# report_hook(backbone, world folder, trained Glasses, feature cache or None): prints the world's test report
ReportHook = Callable[[Any, str, Any, Any], None]


def register(app: typer.Typer, report_hook: ReportHook | None = None) -> None:
    """Add ``glasses train``, ``glasses finetune`` and ``glasses explain`` to ``app``.

    report_hook: called after ``train`` (unless ``--no-report``) when the data is a world folder with a test
    split; without one, ``train`` prints no report."""
    group = subgroup(app, "glasses", HELP)
    group.command("train")(_train_command(report_hook))
    group.command("finetune")(finetune)
    group.command("explain")(explain)


class LensInput(str, Enum):
    phrase = "phrase"
    caption = "caption"


class ScoreKind(str, Enum):
    tau = "tau"
    reference = "reference"


class BaseKind(str, Enum):
    affirmative = "affirmative"
    caption = "caption"


class Preset(str, Enum):
    sayno = "sayno"
    paper = "paper"


class DetectorMode(str, Enum):
    lexical = "lexical"
    learned = "learned"
    both = "and"
    either = "or"


def load_backbone(spec: str, device: str = "cpu"):
    """A backbone from its spec (``sayno.load``)."""
    return load(spec, device=device)


def _epochs(text: str, stages: tuple[str, ...] = ("detector", "frame", "lens", "joint")) -> tuple[int, ...]:
    """``"20,10,10,20"`` (one count per stage of ``stages``) or ``"5"`` (every stage) -> the counts."""
    parts = [int(x) for x in text.split(",")]
    if len(parts) == 1:
        parts = parts * len(stages)
    if len(parts) != len(stages) or any(p < 0 for p in parts):
        raise typer.BadParameter(f"give {len(stages)} comma-separated epoch counts ({','.join(stages)}) or one number")
    return tuple(parts)


#: options of sayno's own model and recipe, with their defaults: ``--preset paper`` refuses any other value
SAYNO_ONLY = {"lens": LensInput.phrase, "score": ScoreKind.tau, "base": BaseKind.affirmative,
              "detector": DetectorMode.lexical, "lambda_max": 2.0, "patience": 5, "min_steps": 600,
              "presence_weight": 0.0, "lens_weight": 1.0}


def _cache(no_cache: bool) -> FeatureCache | None:
    return None if no_cache else FeatureCache()


def _has_test_split(data: str) -> bool:
    return Path(data).is_dir() and (Path(data) / "ccneg_test.csv").exists()


def _train_command(report_hook: ReportHook | None) -> Callable[..., None]:
    """The ``train`` command, reporting through ``report_hook``."""

    @cli_errors
    def train(
        data: Annotated[str, typer.Option(help="World folder, or CSV file(s) (negation / CC-Neg / NegBench "
                                               "retrieval), comma-separated.")],
        out: Annotated[Path, typer.Option(help="Checkpoint to write (.safetensors).")],
        model: Annotated[str, typer.Option(help="Backbone spec (see `sayno models`).")] = "embedded",
        val: Annotated[str | None, typer.Option(help="Validation data (default: the world's *_val.csv, else 10% "
                                                     "of the scene groups).")] = None,
        lens: Annotated[LensInput, typer.Option(help="Lens input: each negated phrase (sayno) or the caption (one "
                                                     "h_neg per caption, the reference).")] = LensInput.phrase,
        score: Annotated[ScoreKind, typer.Option(help="tau (sayno) or reference (clamped).")] = ScoreKind.tau,
        base: Annotated[BaseKind, typer.Option(help="Score base: the affirmative remainder (sayno) or the caption "
                                                    "(reference).")] = BaseKind.affirmative,
        detector: Annotated[DetectorMode, typer.Option(help="Which captions count as negated.")] = DetectorMode.lexical,
        lambda_max: Annotated[float, typer.Option(help="Upper bound of lambda.")] = 2.0,
        hidden: Annotated[int | None, typer.Option(
            help="Hidden width of Lens and Frame (default 256); paper: the Frame transformer's feed-forward width "
                 "(default 4 x the embedding size).", show_default=False)] = None,
        epochs: Annotated[str | None, typer.Option(
            help="Epochs per stage: detector,frame,lens,joint (default 20,10,10,20); paper: frame,lens,joint "
                 "(default 3,3,3).", show_default=False)] = None,
        batch_groups: Annotated[int | None, typer.Option(
            help="Scene groups per batch (default 32; fewer for small data, so that an epoch has at least 16 batches).",
            show_default=False)] = None,
        lr: Annotated[float | None, typer.Option(help="AdamW learning rate (default 1e-3; paper: 5e-4).",
                                                 show_default=False)] = None,
        patience: Annotated[int, typer.Option(help="Early stopping: epochs without a better validation loss "
                                                   "(counted after --min-steps).")] = 5,
        min_steps: Annotated[int, typer.Option(help="At least this many steps per stage (small data sets get "
                                                    "more epochs).")] = 600,
        fraction: Annotated[float, typer.Option(help="Train on this fraction of the scene groups.")] = 1.0,
        presence_weight: Annotated[float, typer.Option(help="Weight of the Lens presence loss (0: off).")] = 0.0,
        lens_weight: Annotated[float, typer.Option(help="Weight of the reference Lens loss in the joint stage.")] = 1.0,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        threads: Annotated[int, typer.Option(help="CPU threads (the modules are small: 1 is fastest).")] = 1,
        resume: Annotated[bool, typer.Option("--resume/--no-resume",
                                             help="Continue an interrupted run (<out>.partial).")] = True,
        report: Annotated[bool, typer.Option("--report/--no-report",
                                             help="Print the report of the world's test split.")] = True,
        device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the on-disk feature cache.")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint.")] = False,
        preset: Annotated[Preset, typer.Option(
            help="sayno: sayno's Glasses (docs/GLASSES.md); paper: the paper's Lens and Frame with its three stages "
                 "and losses (sayno.glasses.paper_train).")] = Preset.sayno,
        reference_quirks: Annotated[bool, typer.Option(
            "--reference-quirks", help="With --preset paper: reproduce the reference code's quirks (batch-softmax "
                                       "Lens, one lambda per caption from its own image, ...).")] = False,
    ) -> None:
        """Train Glasses on cached frozen-CLIP features (detector, Frame, Lens, then Lens+Frame; with
        --preset paper: the paper's Frame, Lens, then both)."""
        if preset == Preset.paper:
            given = {"lens": lens, "score": score, "base": base, "detector": detector, "lambda_max": lambda_max,
                     "patience": patience, "min_steps": min_steps, "presence_weight": presence_weight,
                     "lens_weight": lens_weight}
            other = [k for k, v in given.items() if v != SAYNO_ONLY[k]]
            if other:
                raise typer.BadParameter(f"--preset paper does not take --{other[0].replace('_', '-')} "
                                         "(an option of sayno's own Glasses)")
            _train_paper(data, out, model, val, hidden, epochs, batch_groups, lr, fraction, seed, threads,
                         reference_quirks, device, no_cache, overwrite, report)
            return
        if reference_quirks:
            raise typer.BadParameter("--reference-quirks needs --preset paper")
        hidden = 256 if hidden is None else hidden
        # every argument is checked before the backbone loads and long before training ends
        tc = TrainConfig(epochs=_epochs(epochs or "20,10,10,20"), batch_groups=batch_groups,
                         lr=1e-3 if lr is None else lr, patience=patience,
                         min_steps=min_steps, fraction=fraction, seed=seed, threads=threads,
                         presence_weight=presence_weight, lens_weight=lens_weight)
        check_output_file(out, overwrite)
        sizes = GlassesConfig(embed_dim=1, num_layers=1, hidden=hidden, lambda_max=lambda_max)
        check_model_config(sizes)
        backbone = load_backbone(model, device)
        cfg = GlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers, hidden=hidden,
                            lens_input=lens.value, score=score.value, base=base.value, detector=detector.value,
                            lambda_max=lambda_max)
        cache = _cache(no_cache)
        res = train_glasses(backbone, data, out, config=cfg, train=tc, val_data=val, resume=resume, cache=cache,
                            log=console.print, overwrite=overwrite)
        if report and report_hook is not None and _has_test_split(data):
            report_hook(backbone, data, res.glasses, cache)

    return train


def _train_paper(data: str, out: Path, model: str, val: str | None, hidden: int | None, epochs: str | None,
                 batch_groups: int | None, lr: float | None, fraction: float, seed: int, threads: int,
                 reference_quirks: bool, device: str, no_cache: bool, overwrite: bool, report: bool) -> None:
    """``train --preset paper``: every argument is checked before the backbone loads."""
    defaults = PaperTrainConfig()
    tc = PaperTrainConfig(epochs=_epochs(epochs, PAPER_STAGES) if epochs else defaults.epochs,
                          batch_groups=batch_groups or defaults.batch_groups, lr=defaults.lr if lr is None else lr,
                          fraction=fraction, seed=seed, threads=threads)
    check_output_file(out, overwrite)
    PaperGlassesConfig(embed_dim=8, num_layers=3, hidden=hidden or 0)  # the size alone, before the backbone
    backbone = load_backbone(model, device)
    cfg = PaperGlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers, hidden=hidden or 0,
                             reference_quirks=reference_quirks)
    cache = _cache(no_cache)
    train_paper_glasses(backbone, data, out, config=cfg, train=tc, val_data=val, cache=cache, log=console.print,
                        overwrite=overwrite)
    if report and _has_test_split(data):  # the world report reads sayno's Glasses: the benchmark reads both
        console.print(f"test split: sayno benchmark --world {data} --paper-glasses {out}")


@cli_errors
def finetune(
    data: Annotated[str, typer.Option(help="Same data as `glasses train`.")],
    out: Annotated[Path, typer.Option(help="Fine-tuned text tower to write (.safetensors).")],
    model: Annotated[str, typer.Option(help="Backbone spec.")] = "embedded",
    val: Annotated[str | None, typer.Option(help="Validation data.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 2,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 5e-5,
    batch_groups: Annotated[int, typer.Option(help="Scene groups per batch.")] = 16,
    fraction: Annotated[float, typer.Option(help="Train on this fraction of the scene groups.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the on-disk feature cache.")] = False,
) -> None:
    """Baseline: fine-tune a copy of the text tower on the same negation data (ConCLIP / NegBench style)."""
    backbone = load_backbone(model, device)
    fc = FinetuneConfig(epochs=epochs, lr=lr, batch_groups=batch_groups, fraction=fraction, seed=seed,
                        threads=threads)
    finetune_text(backbone, data, out, config=fc, val_data=val, cache=_cache(no_cache), log=console.print)


@cli_errors
def explain(
    captions: Annotated[list[str], typer.Argument(help="Captions to analyse.")],
    glasses: Annotated[Path, typer.Option(help="Glasses checkpoint.")],
    model: Annotated[str, typer.Option(help="Backbone spec.")] = "embedded",
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
) -> None:
    """What the Glasses see in each caption: negated?, negated phrases, hedges, lambda."""
    g = load_glasses(glasses, load_backbone(model, device))
    t = Table("caption", "negated", "phrases", "hedged", "affirmative part", "lambda", "tau")
    for e in g.explain(captions):
        t.add_row(e["text"], str(e["negated"]), ", ".join(e["phrases"]), ", ".join(map(str, e["hedged"])),
                  e["affirmative"], ", ".join(f"{x:.3f}" for x in e["lambda"]),
                  ", ".join(f"{x:.3f}" for x in e["tau"]))
    console.print(t)
