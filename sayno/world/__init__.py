"""The emoji world: seeded scenes and captions, sayno's offline stand-in for web image-text data."""
from sayno.world.build import WorldConfig, build_world, sample_pretrain, split_rng
from sayno.world.captions import Caption
from sayno.world.concepts import Concept, load_concepts, pretrain_concepts, unseen_concepts
from sayno.world.scenes import Scene, make_scene, render_scene, sample_counts
from sayno.world.styles import Style, StyleError, get_style

__all__ = [
    "Caption",
    "Concept",
    "Scene",
    "Style",
    "StyleError",
    "WorldConfig",
    "build_world",
    "get_style",
    "load_concepts",
    "make_scene",
    "pretrain_concepts",
    "render_scene",
    "sample_counts",
    "sample_pretrain",
    "split_rng",
    "unseen_concepts",
]
