"""The OOD benchmark: every scorer on the same cached features, the papers' table, ROC curves and histograms.

One row per method; per OOD set AUROC / FPR95 / AUPR-In / AUPR-Out (ID positive; FPR95 = share of OOD
accepted while 95% of ID is accepted, the MCM/CLIPN/NegLabel convention; with ``openood_fpr`` also OpenOOD's
mirror image, labelled "FPR95 (OpenOOD)"), their average over the OOD sets, and ID accuracy.

Covariate shift (full-spectrum OOD, as OpenOOD v1.5's FS-OOD): a *shifted ID* set (same classes, another
art style, e.g. the world's ``noto``, ``twemoji`` or ``fluent`` build) is still in-distribution. For each
shifted set a second table reports ID accuracy on it and AUROC / FPR95 with the shifted images as ID against the
same OOD sets (averaged): a detector that flags style changes as OOD loses there.

The emoji world (:func:`world_ood_benchmark`): ID classes from the ID categories (animal, food), OOD sets
``near`` (other concepts of those categories), ``far`` (other categories), ``unseen_near`` / ``unseen_far``
(never-seen concepts, split the same way); the rule is :func:`sayno.world.build.ood_split`.

Rows beyond the baselines and CLIPN (issue 28): GL-MCM (global + local patch features: the images are encoded
once with their patch tokens, cached beside the features; skipped with a note for an image tower without patch
tokens), CSP (NegLabel's nouns + the conjugated pool) and AdaNeg (test-time proxies; transductive: its scores
depend on the other test images, so it sees each ID set together with every OOD set as one test stream in a seeded
random order, :data:`STREAM_SEED`: the ID images with the OOD sets for the main table, and each shifted-ID set with
the OOD sets, in a stream of its own, for its covariate-shift columns; a column does not depend on which other
shifted sets were given).

Degenerate inputs: an empty OOD set is listed with ``n = 0`` and no metrics (JSON null) and left out of the
average; an OOD set or ID folder that does not exist is an error; unreadable images are dropped and counted
(``bad_rows``); a method that cannot be fitted (NegLabel without a word list) is skipped with a note.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import sayno
from sayno.backbones.base import Backbone
from sayno.base.prompts import check_distinct_classes, class_prompts, ensemble
from sayno.clipn.checkpoint import load_clipn
from sayno.clipn.infer import Clipn
from sayno.data import DataError, read_class_names, read_image_folder, report_bad_rows, walk_images
from sayno.errors import InputError
from sayno.features import FeatureCache, encode_images, encode_texts
from sayno.ood.adaneg import AdaNeg
from sayno.ood.clipn_scorers import ClipnATD, ClipnCTW
from sayno.ood.csp import CSP
from sayno.ood.glmcm import GLMCM
from sayno.ood.metrics import accuracy, fpr95_openood, ood_metrics
from sayno.ood.scorers import MCM, MSP, Energy, MaxLogit, NegLabel, OODScorer, class_templates, template_file
from sayno.world.build import OOD_SETS

FPR_CONVENTION = "ID positive: share of OOD images accepted at the threshold that accepts 95% of ID images"
BASELINES = ("MSP", "MaxLogit", "Energy", "MCM", "NegLabel")
FRONTIER = ("GL-MCM", "CSP", "AdaNeg")  # issue 28's training-free rows
STREAM_SEED = 0  # the order in which a transductive method (AdaNeg) sees the test images


def needs_tokens(scorer: OODScorer) -> bool:
    """Whether ``scorer`` scores image tokens (N, 1 + P, D) rather than image features (GL-MCM)."""
    return bool(getattr(scorer, "needs_tokens", False))


def wants_tokens(backbone: Backbone, methods: Sequence[str] | None) -> bool:
    """Whether the table will have a GL-MCM row: asked for (or every method) and a tower with patch tokens."""
    asked = methods is None or any(m.lower() == GLMCM.name.lower() for m in methods)
    return asked and backbone.image_token_count() is not None


def _features(backbone: Backbone, paths: Sequence[Path], cache: FeatureCache | None, progress: bool,
              bad: list, tokens: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features (M, D) of the readable images, the (len(paths),) mask of which were readable and, with ``tokens``,
    their (M, 1 + P, D) image tokens (same forward pass, cached); the unreadable are added to ``bad``."""
    if not paths:
        count = backbone.image_token_count() if tokens else None
        empty = np.zeros((0, count, backbone.embed_dim), dtype=np.float16) if count else None
        return np.zeros((0, backbone.embed_dim), dtype=np.float32), np.zeros(0, dtype=bool), empty
    res = encode_images(backbone, list(paths), cache=cache, progress=progress, tokens=tokens)
    bad.extend(res.bad)
    toks = res.tokens[res.ok_mask] if res.tokens is not None else None
    return res.features[res.ok_mask], res.ok_mask, toks


def make_scorers(backbone: Backbone, names: Sequence[str], *, clipn: Mapping[str, Clipn] | None = None,
                 words: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                 cache: FeatureCache | None = None, notes: list[str] | None = None) -> list[tuple[str, OODScorer]]:
    """(row name, fitted scorer) for the baselines, GL-MCM, CSP, AdaNeg and, per CLIPN model, CTW and ATD.

    Class prompts are encoded once (template-ensembled) and shared by MSP, MaxLogit, Energy, MCM and GL-MCM;
    NegLabel, CSP and AdaNeg use NegLabel's single template (AdaNeg reuses NegLabel's mined negatives); each CLIPN
    model encodes its two towers once for both rules. A method that cannot be fitted for want of data (NegLabel,
    CSP or AdaNeg without WordNet; GL-MCM on a tower without patch tokens) is skipped with a note.
    """
    want = None if methods is None else {m.lower() for m in methods}

    def wanted(row: str, name: str) -> bool:
        return want is None or row.lower() in want or name.lower() in want

    templates = class_templates()
    check_distinct_classes(backbone.tokenize, list(names), templates)
    rows: list[tuple[str, OODScorer]] = []
    notes = notes if notes is not None else []
    plain = [c for c in (MSP, MaxLogit, Energy, MCM) if wanted(c.name, c.name)]
    glmcm = wanted(GLMCM.name, GLMCM.name)
    if glmcm and backbone.image_token_count() is None:
        notes.append(f"GL-MCM skipped: {backbone.spec} has no patch tokens (local features need a ViT image tower)")
        glmcm = False
    if plain or glmcm:
        feats = ensemble(encode_texts(backbone, class_prompts(names, templates), cache=cache, progress=False),
                         len(names))
        for cls in plain:
            rows.append((cls.name, cls(logit_scale=backbone.logit_scale).fit(feats)))
    neglabel = None
    if wanted("NegLabel", "NegLabel") or wanted(AdaNeg.name, AdaNeg.name):
        try:
            neglabel = NegLabel(backbone=backbone, cache=cache, words=words).fit(list(names))
        except DataError as e:
            notes.append(f"NegLabel skipped: {e}")
        else:
            if wanted("NegLabel", "NegLabel"):
                rows.append(("NegLabel", neglabel))
    if glmcm:
        rows.append((GLMCM.name, GLMCM().fit(feats)))
    if wanted(CSP.name, CSP.name):
        try:  # a user word list: its words are the nouns, there are no adjectives to conjugate
            kw = {} if words is None else {"nouns": list(words), "adjectives": []}
            rows.append((CSP.name, CSP(backbone=backbone, cache=cache, **kw).fit(list(names))))
        except DataError as e:
            notes.append(f"CSP skipped: {e}")
    if wanted(AdaNeg.name, AdaNeg.name) and neglabel is not None:
        rows.append((AdaNeg.name, AdaNeg(backbone=backbone, cache=cache,
                                         negative_features=neglabel.negative_features_).fit(list(names))))
    for label, model in (clipn or {}).items():
        suffix = f" [{label}]" if label else ""
        texts = None
        for cls in (ClipnCTW, ClipnATD):
            if wanted(cls.name + suffix, cls.name):
                texts = texts or model.class_texts(list(names))
                rows.append((cls.name + suffix, cls(clipn=model).fit(texts)))
    return rows


def _load_clipn(clipn, backbone: Backbone) -> dict[str, Clipn]:
    if clipn is None:
        return {}
    if isinstance(clipn, (str, os.PathLike, Clipn)):
        clipn = {"": clipn}
    return {k: (v if isinstance(v, Clipn) else load_clipn(v, backbone)) for k, v in clipn.items()}


def evaluate_ood(backbone: Backbone, class_names: Sequence[str] | str | os.PathLike, id_dir: str | os.PathLike,
                 ood_dirs: Mapping[str, str | os.PathLike], *, clipn=None,
                 shifted_id: Mapping[str, str | os.PathLike] | None = None, words: Sequence[str] | None = None,
                 methods: Sequence[str] | None = None, cache: FeatureCache | None = None, progress: bool = True,
                 plots: str | os.PathLike | None = None, openood_fpr: bool = False,
                 console: Console | None = None) -> dict:
    """Run every method; returns the JSON-ready result (``task`` = ``"ood"``), writes PNGs into ``plots``.

    clipn: a checkpoint path or loaded :class:`Clipn`, or ``{label: path}`` for several (rows get
    ``[label]``; with several, ``CLIPN-CTW``/``CLIPN-ATD`` mean rows and ``std`` columns are added).
    """
    t_start = time.time()
    clash = sorted((set(ood_dirs) & set(shifted_id or {})) | ({"avg"} & {*ood_dirs, *(shifted_id or {})}))
    if clash:  # their metrics share one namespace: "<set> AUROC"
        raise InputError(f"OOD and shifted-ID sets need distinct names other than 'avg': {', '.join(clash)}")
    names = read_class_names(class_names) if isinstance(class_names, (str, os.PathLike)) else list(class_names)
    id_data = read_image_folder(id_dir, names)
    bad: list = list(id_data.bad_rows)
    tok = wants_tokens(backbone, methods)
    t_encode = time.perf_counter()
    f_id, ok, t_id = _features(backbone, id_data.image_paths, cache, progress, bad, tok)
    y_id = id_data.labels[ok]
    ood_feats, ood_toks, ood_info = {}, {}, {}
    for set_name, d in ood_dirs.items():
        paths = walk_images(d)
        ood_feats[set_name], _, ood_toks[set_name] = _features(backbone, paths, cache, progress, bad, tok)
        ood_info[set_name] = {"path": str(d), "n": len(ood_feats[set_name])}
    shifted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    shift_toks: dict[str, np.ndarray | None] = {}
    shifted_info = {}
    for set_name, d in (shifted_id or {}).items():
        ds = read_image_folder(d, names)
        bad.extend(ds.bad_rows)
        fs, oks, shift_toks[set_name] = _features(backbone, ds.image_paths, cache, progress, bad, tok)
        shifted[set_name] = (fs, ds.labels[oks])
        shifted_info[set_name] = {"path": str(d), "n": len(fs)}
    encode_seconds = round(time.perf_counter() - t_encode, 2)
    if len(f_id) == 0:
        raise DataError(f"{id_dir}: no readable ID images")

    models = _load_clipn(clipn, backbone)
    notes: list[str] = []
    methods_out: dict[str, dict] = {}
    timings: dict[str, float] = {}
    scores_for_plots: dict[str, dict[str, np.ndarray]] = {}
    neg_info = csp_info = None
    for row, scorer in make_scorers(backbone, names, clipn=models, words=words, methods=methods, cache=cache,
                                    notes=notes):
        if isinstance(scorer, CSP):
            csp_info = {"count": len(scorer.negative_features_), "nouns": scorer.n_nouns_,
                        "examples": (scorer.negative_labels_ or [])[scorer.n_nouns_ or 0:][:20]}
        if type(scorer) is NegLabel:
            neg_info = {"count": len(scorer.negative_features_), "groups": len(scorer.groups_),
                        "source": "user list" if words is not None else "WordNet nouns+adjectives",
                        "examples": (scorer.negative_labels_ or [])[:20]}
        if needs_tokens(scorer):  # GL-MCM scores the image tokens, row 0 the full-precision image features
            x_id = with_global(t_id, f_id)
            x_ood = {k: with_global(ood_toks[k], v) for k, v in ood_feats.items()}
            x_shift = {k: (with_global(shift_toks[k], v[0]), v[1]) for k, v in shifted.items()}
        else:
            x_id, x_ood, x_shift = f_id, ood_feats, shifted
        t0 = time.perf_counter()
        ood_by_shift = None
        if getattr(scorer, "transductive", False):
            s_id, s_ood = stream_scores(scorer, x_id, x_ood)
            s_shift, ood_by_shift = {}, {}
            for k, v in x_shift.items():
                s_shift[k], ood_by_shift[k] = stream_scores(scorer, v[0], x_ood)
        else:
            s_id = scorer.score_samples(x_id)
            s_ood = {k: scorer.score_samples(v) for k, v in x_ood.items()}
            s_shift = {k: scorer.score_samples(v[0]) for k, v in x_shift.items()}
        timings[row] = round(time.perf_counter() - t0, 4)
        methods_out[row] = _row_metrics(scorer, x_id, y_id, s_id, s_ood, x_shift, s_shift, openood_fpr,
                                        ood_by_shift)
        if scorer.has_rule:  # the method's own decision: the share of each set it calls OOD
            for k, v in x_ood.items():
                if len(v):
                    methods_out[row][f"{k} flagged OOD %"] = 100.0 * float(np.mean(scorer.decision_function(v) < 0))
        scores_for_plots[row] = {"ID": s_id, **{k: v for k, v in s_ood.items() if len(v)}}
    _add_means(methods_out, list(models))
    result = {
        "task": "ood", "dataset": str(id_dir), "model": backbone.spec, "fingerprint": backbone.fingerprint,
        "clipn": {k or "default": ("<loaded model>" if isinstance(v, Clipn) else str(v)) for k, v in (
            clipn.items() if isinstance(clipn, Mapping) else ([("", clipn)] if clipn is not None else []))},
        "id": {"path": str(id_dir), "n": len(f_id), "classes": len(names)},
        "ood_sets": ood_info, "shifted_id": shifted_info, "methods": methods_out,
        "fpr_convention": FPR_CONVENTION + ("; 'FPR95 (OpenOOD)': OOD positive, share of ID flagged at 95% of OOD"
                                            " flagged" if openood_fpr else ""),
        "templates": {"file": "clipn_templates.json", **_templates_info()},
        "negative_labels": neg_info, "csp_labels": csp_info, "scoring_seconds": timings, "encoding_seconds": encode_seconds,
        "local_features": bool(tok), "stream_seed": STREAM_SEED, "bad_rows": len(bad), "notes": notes,
        "sayno_version": sayno.__version__, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for k, m in models.items():
        result.setdefault("clipn_config", {})[k or "default"] = m.config
    if plots is not None:
        result["plots"] = save_plots(scores_for_plots, plots)
    result["seconds"] = round(time.time() - t_start, 2)
    if console is not None and bad:
        report_bad_rows(bad, console)
    return result


def with_global(tokens: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(M, 1 + P, D) float32 tokens whose row 0 is ``features`` (M, D) (the cache keeps the tokens in float16, the
    features in float32: GL-MCM's global part and its ID accuracy then equal MCM's inputs exactly)."""
    out = tokens.astype(np.float32)
    out[:, 0] = features
    return out


def stream_scores(scorer: OODScorer, x_id: np.ndarray, x_ood: Mapping[str, np.ndarray], seed: int = STREAM_SEED
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A transductive scorer's scores when it sees the ID images and every OOD set as one test stream, in a
    ``default_rng(seed)`` random order: (ID scores, {OOD set: scores}), each in its set's order."""
    arrays = [x_id, *x_ood.values()]
    sizes = [len(a) for a in arrays]
    allx = np.concatenate(arrays)
    order = np.random.default_rng(seed).permutation(len(allx))
    scores = np.empty(len(allx))
    if len(allx):
        scores[order] = scorer.score_samples(allx[order])
    chunks = np.split(scores, np.cumsum(sizes)[:-1])
    return chunks[0], dict(zip(x_ood, chunks[1:]))


def _templates_info() -> dict:
    t = template_file()
    return {"name": t["name"], "version": t["version"], "affirmative": t["affirmative"]}


def _row_metrics(scorer: OODScorer, f_id, y_id, s_id, s_ood, shifted, s_shift, openood_fpr: bool,
                 ood_by_shift: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> dict:
    """One row of the table. ood_by_shift: per shifted set, the OOD scores to compare it with (a transductive
    scorer's own stream for that set); default ``s_ood``."""
    out: dict[str, float | None | int] = {"ID acc": 100.0 * accuracy(scorer.predict_class(f_id), y_id)}
    aurocs, fprs = [], []
    for k, so in s_ood.items():
        if len(so) == 0:
            for m in ("AUROC", "FPR95", "AUPR_IN", "AUPR_OUT"):
                out[f"{k} {m}"] = None
            continue
        met = ood_metrics(s_id, so)
        for m, v in met.items():
            out[f"{k} {m}"] = v
        if openood_fpr:
            out[f"{k} FPR95 (OpenOOD)"] = 100.0 * fpr95_openood(s_id, so)
        aurocs.append(met["AUROC"])
        fprs.append(met["FPR95"])
    out["avg AUROC"] = float(np.mean(aurocs)) if aurocs else None
    out["avg FPR95"] = float(np.mean(fprs)) if fprs else None
    if scorer.has_rule:  # CLIPN's own decision: how many ID / OOD images it calls OOD
        out["ID flagged OOD %"] = 100.0 * float(np.mean(scorer.decision_function(f_id) < 0))
    for k, (fs, ys) in shifted.items():
        if len(fs) == 0:
            continue
        out[f"{k} ID acc"] = 100.0 * accuracy(scorer.predict_class(fs), ys)
        against = s_ood if ood_by_shift is None else ood_by_shift[k]
        mets = [ood_metrics(s_shift[k], so) for so in against.values() if len(so)]
        out[f"{k} AUROC"] = float(np.mean([m["AUROC"] for m in mets])) if mets else None
        out[f"{k} FPR95"] = float(np.mean([m["FPR95"] for m in mets])) if mets else None
    return out


def _add_means(rows: dict[str, dict], labels: list[str]) -> None:
    """With several CLIPN models: ``CLIPN-CTW``/``CLIPN-ATD`` rows of means, plus ``<column> std``."""
    if len(labels) < 2:
        return
    for rule in ("CLIPN-CTW", "CLIPN-ATD"):
        members = [rows[f"{rule} [{lab}]"] for lab in labels if f"{rule} [{lab}]" in rows]
        if len(members) < 2:
            continue
        mean: dict[str, float | None] = {}
        for col in members[0]:
            vals = [m[col] for m in members if m.get(col) is not None]
            if len(vals) == len(members):
                mean[col] = float(np.mean(vals))
                mean[f"{col} std"] = float(np.std(vals, ddof=1))
        rows[f"{rule} (mean of {len(members)})"] = mean


# ---------------------------------------------------------------------------------------------- plots
def save_plots(scores: Mapping[str, Mapping[str, np.ndarray]], folder: str | os.PathLike) -> list[str]:
    """ROC curves (one PNG per OOD set, every method) and score histograms (one PNG per method)."""
    from matplotlib.figure import Figure  # plot-only heavy dependencies (no pyplot: no global backend change)
    from sklearn.metrics import roc_curve

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    sets = sorted({k for s in scores.values() for k in s if k != "ID"})
    for set_name in sets:
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        for method, s in scores.items():
            if set_name not in s:
                continue
            y = np.r_[np.ones(len(s["ID"])), np.zeros(len(s[set_name]))]
            fpr, tpr, _ = roc_curve(y, np.r_[s["ID"], s[set_name]])
            ax.plot(fpr, tpr, label=method)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.axhline(0.95, ls="--", lw=0.8, color="grey")
        ax.set(xlabel="OOD accepted (FPR)", ylabel="ID accepted (TPR)", title=f"ROC, ID vs {set_name}")
        ax.legend(fontsize=7, loc="lower right")
        p = folder / f"roc_{_safe(set_name)}.png"
        fig.savefig(p, dpi=90, bbox_inches="tight")
        written.append(str(p))
    for method, s in scores.items():
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        lo = min(float(v.min()) for v in s.values())
        hi = max(float(v.max()) for v in s.values())
        if hi - lo < 1e-9 * max(1.0, abs(lo)):  # identical scores: one visible bar
            lo, hi = lo - 1e-3 * max(1.0, abs(lo)), hi + 1e-3 * max(1.0, abs(hi))
        bins = np.linspace(lo, hi, 50)
        for k, v in s.items():
            ax.hist(v, bins=bins, alpha=0.5, density=True, label=f"{k} (n={len(v)})")
        ax.set(xlabel="score (higher = more ID)", ylabel="density", title=method)
        ax.legend(fontsize=7)
        p = folder / f"hist_{_safe(method)}.png"
        fig.savefig(p, dpi=90, bbox_inches="tight")
        written.append(str(p))
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---------------------------------------------------------------------------------------------- the world
#: OOD set folders of worlds before version 3 (``ood/ood_seen``, ``ood/ood_unseen``), still read
LEGACY_OOD_SETS = ("ood_seen", "ood_unseen")


def world_ood_sets(folder: str | os.PathLike) -> dict[str, Path]:
    """{set name: folder} of a world's ``ood/`` part, in table order (:data:`sayno.world.build.OOD_SETS`, or
    the two sets of a world before version 3); :class:`DataError` when it has none."""
    w = Path(folder) / "ood"
    sets = {name: w / name for name in (*OOD_SETS, *LEGACY_OOD_SETS) if (w / name).is_dir()}
    if not (w / "id").is_dir() or not (w / "id_classes.txt").is_file() or not sets:
        raise DataError(f"{folder}: no OOD part (ood/id, ood/id_classes.txt and OOD sets); build it with "
                        f"sayno world build {folder} --parts ood")
    return sets


def _shift_id_dirs(folder: Path, shift_folders: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    """{style: ``<world>/ood/id``} of the covariate-shifted worlds; :class:`DataError` for a world without the
    OOD part or with other ID classes than ``folder``'s (another seed or world version)."""
    want = read_class_names(folder / "ood" / "id_classes.txt")
    out = {}
    for style, world in shift_folders.items():
        ood = Path(world) / "ood"
        if not (ood / "id").is_dir() or not (ood / "id_classes.txt").is_file():
            raise DataError(f"{world}: no ood/id for the {style} covariate shift; build it with sayno world build "
                            f"{world} --style {style} --parts ood (same seed as {folder})")
        if read_class_names(ood / "id_classes.txt") != want:
            raise DataError(f"{world}: its ID classes differ from {folder}'s (another seed or world version); "
                            f"rebuild it with the same seed")
        out[style] = ood / "id"
    return out


def world_ood_benchmark(backbone: Backbone, folder: str | os.PathLike, *,
                        shift_folders: Mapping[str, str | os.PathLike] | None = None,
                        noto_folder: str | os.PathLike | None = None, clipn=None, cache: FeatureCache | None = None,
                        progress: bool = True, plots: str | os.PathLike | None = None,
                        words: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                        openood_fpr: bool = False, console: Console | None = None) -> dict:
    """The emoji world's OOD benchmark (:func:`evaluate_ood` on a world folder).

    ID = ``ood/id``; OOD sets = ``near``, ``far``, ``unseen_near``, ``unseen_far`` (the rule:
    :func:`sayno.world.build.ood_split`; a world before version 3 has ``ood_seen`` / ``ood_unseen``).
    shift_folders: ``{style: world folder}``, each a world of the same seed built in another style with the
    ``ood`` part; its ``ood/id`` is covariate-shifted ID (columns ``<style> AUROC`` ... in the result).
    noto_folder: the older single-shift form, ``{"noto": noto_folder}``; skipped when it has no ``ood/id``.
    The result gets ``"world"``: the folder, its version and its manifest's OOD split (classes per set).
    """
    folder = Path(folder)
    sets = world_ood_sets(folder)
    shifts = dict(shift_folders or {})
    if noto_folder is not None and "noto" not in shifts and (Path(noto_folder) / "ood" / "id").is_dir():
        shifts["noto"] = noto_folder
    w = folder / "ood"
    result = evaluate_ood(backbone, w / "id_classes.txt", w / "id", sets, clipn=clipn,
                          shifted_id=_shift_id_dirs(folder, shifts), words=words, methods=methods, cache=cache,
                          progress=progress, plots=plots, openood_fpr=openood_fpr, console=console)
    manifest = folder / "world.json"
    built = json.loads(manifest.read_text()) if manifest.is_file() else {}
    result["world"] = {"folder": str(folder), "version": built.get("version"),
                       "style": built.get("config", {}).get("style"),
                       "ood_split": built.get("parts", {}).get("ood"),
                       "shift_worlds": {k: str(v) for k, v in shifts.items()}}
    return result


# ---------------------------------------------------------------------------------------------- printing
def _fmt(v, std=None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if std is None else f"{v:.2f}±{std:.2f}"


def _cell(m: dict, a: str, b: str) -> str:
    """``"AUROC / FPR95"`` of metrics ``a`` and ``b``, with ``±std`` where the row has one."""
    return f"{_fmt(m.get(a), m.get(a + ' std'))} / {_fmt(m.get(b), m.get(b + ' std'))}"


def print_ood_table(result: dict, console: Console) -> None:
    """The papers' table: per OOD set AUROC (up) / FPR95 (down), their average and ID accuracy; then, with
    covariate-shifted ID sets, a second table: per shift (style) AUROC / FPR95 of the shifted ID images against
    the OOD sets (averaged over them) and ID accuracy on them."""
    sets = list(result["ood_sets"])
    shifts = list(result.get("shifted_id", {}))
    t = Table(title=f"OOD detection, ID {Path(result['dataset']).name} ({result['id']['n']} images, "
              f"{result['id']['classes']} classes), AUROC↑ / FPR95↓ (%)", title_justify="left")
    t.add_column("method")
    for s in sets:
        t.add_column(f"{s} (n={result['ood_sets'][s]['n']})", justify="right")
    t.add_column("average", justify="right")
    t.add_column("ID acc", justify="right")
    for name, m in result["methods"].items():
        row = [_cell(m, f"{s} AUROC", f"{s} FPR95") for s in sets] + [_cell(m, "avg AUROC", "avg FPR95"),
                                                                         _fmt(m.get("ID acc"), m.get("ID acc std"))]
        t.add_row(escape(name), *row)  # row names hold "[label]": not rich markup
    console.print(t)
    if shifts:
        _print_shift_table(result, shifts, console)
    console.print(f"FPR95: {result.get('fpr_convention', FPR_CONVENTION)}", style="dim")
    for note in result.get("notes", []):
        console.print(note, style="yellow")


def _print_shift_table(result: dict, shifts: list[str], console: Console) -> None:
    """Covariate shift: one column pair per shifted ID set (style)."""
    t = Table(title="Covariate shift: the ID classes in another style (still ID) vs every OOD set, AUROC↑ / "
              "FPR95↓ (%), and ID accuracy on them", title_justify="left")
    t.add_column("method")
    for s in shifts:
        t.add_column(f"{s}-ID vs OOD (n={result['shifted_id'][s]['n']})", justify="right")
        t.add_column(f"{s} ID acc", justify="right")
    for name, m in result["methods"].items():
        row = []
        for s in shifts:
            row += [_cell(m, f"{s} AUROC", f"{s} FPR95"), _fmt(m.get(f"{s} ID acc"), m.get(f"{s} ID acc std"))]
        t.add_row(escape(name), *row)
    console.print(t)
