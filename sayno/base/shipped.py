"""The table of weights that ship with sayno (``sayno/weights``): what each is and for which backbone."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

WEIGHTS_DIR: Path = Path(str(resources.files("sayno").joinpath("weights")))

# name -> (file under sayno/weights, the backbone spec it belongs to)
SHIPPED: dict[str, tuple[str, str]] = {
    "embedded": ("embedded", "embedded"),  # the embedded CLIP (a folder: config.json + clip.safetensors)
    "glasses": ("glasses-embedded.safetensors", "embedded"),
    "glasses-paper": ("glasses-paper-embedded.safetensors", "embedded"),  # `glasses train --preset paper`
    "clipn": ("clipn-embedded.safetensors", "embedded"),
}


def shipped_weights(kind: str, model: str = "embedded") -> Path | None:
    """The shipped file of ``kind`` ("embedded", "glasses", "clipn") for backbone spec ``model``, or None when
    sayno ships none for it (or it is not installed)."""
    if kind not in SHIPPED:
        raise KeyError(f"unknown shipped weights {kind!r}; known: {sorted(SHIPPED)}")
    name, spec = SHIPPED[kind]
    if model != spec:
        return None
    path = WEIGHTS_DIR / name
    return path if path.exists() else None
