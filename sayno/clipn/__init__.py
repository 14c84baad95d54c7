"""CLIPN: a "no" text encoder and "no" prompts that let CLIP say an image is none of its classes (docs/CLIPN.md).

    >>> from sayno.clipn import load_clipn                         # doctest: +SKIP
    >>> clipn = load_clipn("sayno/weights/clipn-embedded.safetensors", backbone)
    >>> d = clipn.decide(image_features, clipn.class_texts(["dog", "cat"]), "atd")  # d.pred, d.is_ood, d.score
"""
from sayno.clipn.checkpoint import FingerprintMismatch, load_clipn, read_clipn, save_clipn
from sayno.clipn.infer import ClassTexts, Clipn, Decision, DuplicateClassError, atd, ctw, predict_images
from sayno.clipn.model import ClipnError, NoTextEncoder
from sayno.clipn.train import TrainConfig, train_clipn

__all__ = [
    "ClassTexts",
    "Clipn",
    "ClipnError",
    "Decision",
    "DuplicateClassError",
    "FingerprintMismatch",
    "NoTextEncoder",
    "TrainConfig",
    "atd",
    "ctw",
    "load_clipn",
    "predict_images",
    "read_clipn",
    "save_clipn",
    "train_clipn",
]
