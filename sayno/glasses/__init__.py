"""CLIPGlasses: negation-aware scoring on top of a frozen CLIP (docs/GLASSES.md).

    >>> from sayno.glasses import load_glasses                       # doctest: +SKIP
    >>> g = load_glasses("sayno/weights/glasses-embedded.safetensors", backbone)
    >>> g.score_matrix(text_batch, image_features)   # (N, M), like sayno.base.scoring.PlainClip

Modules: ``config`` (GlassesConfig), ``analysis`` (what Glasses read from a caption, through
:mod:`sayno.negation`), ``model`` (Glasses, load_glasses), ``scoring`` (numpy scores, GlassesScorer),
``phrases`` (the bounded phrase-prompt memo), ``reading`` (the memoised read limits), ``explain``,
``checkpoint`` (the ``sayno-glasses`` envelope),
``data`` (training data through the sayno.data readers), ``train``, ``finetune`` (the text-tower baseline),
``cli`` (``sayno glasses ...``), ``training_free`` (Glasses with no learned weights, for any backbone),
``paper`` (the reference code's Lens and Frame, state-dict compatible, and PaperGlasses, the paper's Glasses
as a scorer), ``paper_train`` (``sayno glasses train --preset paper``), ``peers`` (training-free peers:
rclip-style subtraction, concept projection).
"""
from sayno.glasses.analysis import analyse, analyse_texts
from sayno.glasses.config import GlassesConfig, GlassesError
from sayno.glasses.finetune import FinetunedText, finetune_text, load_finetuned
from sayno.glasses.model import Glasses, GlassesScorer, load_glasses
from sayno.glasses.paper import PaperFrame, PaperGlasses, PaperGlassesConfig, PaperLens, load_paper_glasses
from sayno.glasses.paper_train import PaperTrainConfig, train_paper_glasses
from sayno.glasses.scoring import Slots
from sayno.glasses.train import TrainConfig, train_glasses
from sayno.glasses.training_free import (
    Calibration,
    TrainingFreeGlasses,
    TrainingFreeSettings,
    calibrate,
)

__all__ = [
    "Calibration",
    "FinetunedText",
    "Glasses",
    "GlassesConfig",
    "GlassesError",
    "GlassesScorer",
    "PaperFrame",
    "PaperGlasses",
    "PaperGlassesConfig",
    "PaperLens",
    "PaperTrainConfig",
    "Slots",
    "TrainConfig",
    "TrainingFreeGlasses",
    "TrainingFreeSettings",
    "analyse",
    "analyse_texts",
    "calibrate",
    "finetune_text",
    "load_finetuned",
    "load_glasses",
    "load_paper_glasses",
    "train_glasses",
    "train_paper_glasses",
]

