"""CLIPN: a "no" text encoder and "no" prompts that let CLIP say an image is none of its classes (docs/CLIPN.md).

    >>> from sayno.clipn import load_clipn                         # doctest: +SKIP
    >>> clipn = load_clipn("sayno/weights/clipn-embedded.safetensors", backbone)
    >>> d = clipn.decide(image_features, clipn.class_texts(["dog", "cat"]), "atd")  # d.pred, d.is_ood, d.score
"""
from sayno.base.prompts import DuplicateClassError
from sayno.clipn.checkpoint import load_clipn, read_clipn, save_clipn
from sayno.clipn.infer import ClassTexts, Clipn, Decision, atd, clipn_templates, ctw
from sayno.clipn.model import ClipnError, NoTextEncoder
from sayno.clipn.predict import predict_images
from sayno.clipn.train import TrainConfig, train_clipn

__all__ = [
    "ClassTexts",
    "Clipn",
    "ClipnError",
    "Decision",
    "DuplicateClassError",
    "NoTextEncoder",
    "TrainConfig",
    "atd",
    "clipn_templates",
    "ctw",
    "load_clipn",
    "predict_images",
    "read_clipn",
    "save_clipn",
    "train_clipn",
]
