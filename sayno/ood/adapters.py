"""sayno's OOD detectors inside the two benchmark frameworks people run: OpenOOD and pytorch-ood.

The direction differs, and each adapter converts it once:

- **OpenOOD** postprocessors (duck-typed to ``openood.postprocessors.BasePostprocessor``: ``setup(net,
  id_loader_dict, ood_loader_dict)``, ``postprocess(net, data) -> (pred, conf)``, ``inference(net, data_loader)``):
  ``conf`` higher = in-distribution, sayno's own direction (``conf = score_samples``); ``pred`` the ID class.
- **pytorch-ood** detectors (``pytorch_ood.api.FeaturesDetector``: ``fit``/``fit_features``,
  ``predict``/``predict_features``): larger = more outlying, so ``predict = -score_samples``.

Both take a fitted sayno scorer (fitted on the ID class names, zero-shot) and turn images into what it scores
through an ``encoder``: by default, with a sayno :class:`~sayno.backbones.base.Backbone` as the network, its
normalised image features (``encode_image``), or its image tokens (``encode_image_tokens``) for a scorer that needs
local features (GL-MCM); any other network is called as ``net(images)`` and must return those features.
A transductive scorer (AdaNeg) is streamed: each batch continues the memory of the batches before it
(``score_partial``); ``setup`` and ``fit`` start a new stream.

>>> pp = OpenOODPostprocessor(MCM(backbone=bb).fit(names))            # doctest: +SKIP
>>> pred, conf = pp.postprocess(bb, pixels)                           # conf: higher = ID
>>> det = pytorch_ood_detector(MCM(backbone=bb).fit(names), bb)       # doctest: +SKIP
>>> det.predict(pixels)                                               # higher = OOD
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from sayno.backbones.base import Backbone
from sayno.errors import InputError
from sayno.ood.scorers import NotFittedError, OODScorer

Encoder = Callable[[Any, torch.Tensor], Any]


def _fitted(scorer: OODScorer) -> OODScorer:
    if not isinstance(scorer, OODScorer):
        raise InputError(f"expected a sayno OOD scorer, got {type(scorer).__name__}")
    if not hasattr(scorer, "class_features_"):
        raise NotFittedError(f"{scorer.name} is not fitted: fit it on the ID class names first")
    return scorer


def default_encoder(scorer: OODScorer) -> Encoder:
    """``(net, images) -> features`` for ``scorer``: a :class:`Backbone`'s ``encode_image`` (or
    ``encode_image_tokens`` when the scorer needs local features); any other network is called."""
    tokens = bool(getattr(scorer, "needs_tokens", False))

    def encode(net, images):
        if isinstance(net, Backbone):
            return net.encode_image_tokens(images) if tokens else net.encode_image(images)
        return net(images)

    return encode


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _scores(scorer: OODScorer, feats) -> np.ndarray:
    """(N,) higher = ID; a transductive scorer continues its stream."""
    return scorer.score_partial(feats) if getattr(scorer, "transductive", False) else scorer.score_samples(feats)


def _restart(scorer: OODScorer) -> None:
    if getattr(scorer, "transductive", False):
        scorer.reset()


class OpenOODPostprocessor:
    """A fitted sayno scorer as an OpenOOD postprocessor (conf higher = ID; see the module docstring).

    ``postprocess(net, data)`` -> (pred (B,) int64 ID class, conf (B,) float32) torch tensors on CPU;
    ``inference(net, data_loader)`` -> (pred, conf, label) numpy arrays over batches ``{"data", "label"}`` (or
    ``(data, label)`` pairs), OpenOOD's evaluator call.
    """

    APS_mode = False  # OpenOOD's hyperparameter search: nothing to search, the methods' published settings are used
    hyperparam_search_done = True

    def __init__(self, scorer: OODScorer, encoder: Encoder | None = None):
        self.scorer = _fitted(scorer)
        self.encoder = encoder or default_encoder(scorer)

    def setup(self, net: Any, id_loader_dict: Mapping | None = None, ood_loader_dict: Mapping | None = None) -> None:
        """Zero-shot: nothing to fit (the scorer is fitted on class names); starts a new AdaNeg stream."""
        _restart(self.scorer)

    @torch.no_grad()
    def postprocess(self, net: Any, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = _numpy(self.encoder(net, data))
        conf = _scores(self.scorer, feats)
        pred = self.scorer.predict_class(feats)
        return torch.as_tensor(pred, dtype=torch.int64), torch.as_tensor(conf, dtype=torch.float32)

    def inference(self, net: Any, data_loader: Iterable, progress: bool = False) -> tuple[np.ndarray, ...]:
        preds, confs, labels = [], [], []
        for batch in data_loader:
            data, label = (batch["data"], batch["label"]) if isinstance(batch, Mapping) else batch
            pred, conf = self.postprocess(net, data)
            preds.append(pred.numpy())
            confs.append(conf.numpy())
            labels.append(_numpy(label).astype(np.int64))
        if not preds:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return np.concatenate(preds), np.concatenate(confs), np.concatenate(labels)


@functools.cache
def _pytorch_ood_class() -> type:
    """The adapter class, a subclass of ``pytorch_ood.api.FeaturesDetector`` (built once; pytorch-ood is optional)."""
    try:
        from pytorch_ood.api import FeaturesDetector
    except ImportError:
        raise InputError("the pytorch-ood adapter needs pytorch-ood (pip install pytorch-ood)") from None

    class SaynoDetector(FeaturesDetector):
        """A fitted sayno scorer as a pytorch-ood detector: outlier score = ``-score_samples`` (larger = OOD)."""

        requires_fit = False  # zero-shot: fitted on the ID class names already

        def __init__(self, scorer: OODScorer, model: Any = None, encoder: Encoder | None = None):
            self.scorer = _fitted(scorer)
            self.model = model
            self.encoder = encoder or default_encoder(scorer)

        def fit(self, data_loader=None):
            """Nothing to learn from data (zero-shot); starts a new AdaNeg stream."""
            _restart(self.scorer)
            return self

        def fit_features(self, x=None, y=None):
            _restart(self.scorer)
            return self

        @torch.no_grad()
        def predict_features(self, x: torch.Tensor) -> torch.Tensor:
            """(B,) outlier scores from image features (B, D) (GL-MCM: image tokens (B, 1 + P, D))."""
            return torch.as_tensor(-_scores(self.scorer, _numpy(x)), dtype=torch.float32)

        @torch.no_grad()
        def predict(self, x: torch.Tensor) -> torch.Tensor:
            """(B,) outlier scores from images through ``model`` (a sayno Backbone, or a feature extractor)."""
            if self.model is None:
                from pytorch_ood.api import ModelNotSetException

                raise ModelNotSetException("give model= (a sayno Backbone) to predict from images")
            return self.predict_features(self.encoder(self.model, x))

    return SaynoDetector


def pytorch_ood_detector(scorer: OODScorer, model: Any = None, encoder: Encoder | None = None) -> Any:
    """A fitted sayno scorer as a ``pytorch_ood.api.FeaturesDetector`` (larger = more outlying).

    model: what ``predict(images)`` encodes with (a sayno :class:`Backbone`, or any feature extractor);
    ``predict_features`` needs no model."""
    return _pytorch_ood_class()(scorer, model, encoder)
