"""``sayno world build``: render the emoji world's datasets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from sayno.cliutil import console, guard, subgroup
from sayno.errors import InputError
from sayno.world.build import DEFAULT_PARTS, WorldConfig, build_world

WORLD_HELP = "The emoji world: build its datasets."
# the WorldConfig sizes that --scale multiplies
SCALED = ("train_groups", "val_groups", "test_groups", "caption_images", "classify_per_class", "ood_id_per_class",
          "ood_per_class", "predicate_scenes", "predicate_train_scenes")


def register(app: typer.Typer) -> None:
    """Add ``world build`` to ``app``."""
    subgroup(app, "world", WORLD_HELP).command("build")(world_build)


def scaled_config(seed: int, style: str, size: int, scale: float) -> WorldConfig:
    """The default world with every split's size multiplied by ``scale`` (> 0; at least 1 each)."""
    if not 0 < scale <= 100:
        raise InputError(f"scale must be in (0, 100], got {scale}")
    base = WorldConfig()
    return WorldConfig(seed=seed, style=style, size=size,
                       **{k: max(1, int(getattr(base, k) * scale)) for k in SCALED})


def world_build(
    out: Path = typer.Argument(..., help="Output folder."),
    style: str = typer.Option("openmoji", help="Art style: openmoji | noto | twemoji | fluent | folder:<path> "
                              "(PNG/SVG files named by code point, e.g. 1f415.png or 1f6cf-fe0f.png)."),
    seed: int = typer.Option(0, help="Seed of every split's random stream."),
    size: int = typer.Option(64, help="Image size in pixels."),
    parts: str = typer.Option(",".join(DEFAULT_PARTS),
                              help="Comma-separated parts to build (also: predicates_train, training rows of the "
                                   "predicates for Glasses; not built by default, so that a world folder trains the "
                                   "object-only Glasses the model cards describe)."),
    scale: float = typer.Option(1.0, help="Multiply every split's size (0.1 for a quick look)."),
    predicate_train_scenes: int | None = typer.Option(None, min=1, help="Scenes per predicate kind in the "
                                                      "predicates_train part (default: 300 times --scale)."),
    overwrite: bool = typer.Option(False, "--overwrite", "--force",
                                   help="Replace an existing world (or non-empty folder) as a whole."),
    workers: int = typer.Option(None, "--workers", "-j", help="Processes that draw the images (default: one per "
                                "CPU core, at most 8; the images do not depend on it)."),
) -> None:
    """Render the world's datasets (NegBench MCQ/retrieval CSVs, CC-Neg pairs, captions, class folders, and the
    predicates part: people's activities, objects upside down, one object above another)."""
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    config = guard(scaled_config, seed, style, size, scale)
    if predicate_train_scenes is not None:
        config = replace(config, predicate_train_scenes=predicate_train_scenes)
    manifest = guard(build_world, out, config, parts=chosen, overwrite=overwrite, workers=workers)
    console.print(f"wrote {out} ({', '.join(manifest['parts'])})")
