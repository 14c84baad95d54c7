"""CLIPGlasses: negation-aware scoring on top of a frozen CLIP (docs/GLASSES.md).

    >>> from sayno.glasses import load_glasses                       # doctest: +SKIP
    >>> g = load_glasses("sayno/weights/glasses-embedded.safetensors", backbone)
    >>> g.score_matrix(text_batch, image_features)   # (N, M), like sayno.eval.scoring.PlainClip
"""
from sayno.glasses.lexical import Analysis, NegatedPhrase, Negation, ObjectVocabulary, analyse, is_negated
from sayno.glasses.model import (
    Glasses,
    GlassesConfig,
    GlassesError,
    GlassesScorer,
    Slots,
    load_glasses,
    read_metadata,
)

__all__ = [
    "Analysis",
    "FinetunedText",
    "Glasses",
    "GlassesConfig",
    "GlassesError",
    "GlassesScorer",
    "NegatedPhrase",
    "Negation",
    "ObjectVocabulary",
    "Slots",
    "TrainConfig",
    "analyse",
    "finetune_text",
    "is_negated",
    "load_finetuned",
    "load_glasses",
    "read_metadata",
    "train_glasses",
]


def __getattr__(name: str):
    # training pulls in the data readers; import it on first use
    if name in ("train_glasses", "TrainConfig"):
        from sayno.glasses import train

        return getattr(train, name)
    if name in ("finetune_text", "load_finetuned", "FinetunedText"):
        from sayno.glasses import finetune

        return getattr(finetune, name)
    raise AttributeError(name)
