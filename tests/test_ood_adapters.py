"""sayno's detectors as an OpenOOD postprocessor (conf higher = ID) and as a pytorch-ood detector (larger = OOD),
checked against those conventions with pytorch-ood's own base class and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sayno.backbones.testing import tiny_open_clip
from sayno.errors import InputError
from sayno.ood import GLMCM, MCM, AdaNeg, NotFittedError
from sayno.ood.adapters import OpenOODPostprocessor, pytorch_ood_detector
from sayno.ood.metrics import auroc

pytorch_ood = pytest.importorskip("pytorch_ood")
from pytorch_ood.api import FeaturesDetector
from pytorch_ood.metrics import OODMetrics

D, C = 8, 3


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    classes = np.eye(D)[:C]
    labels = rng.integers(0, C, 40)
    id_x = _unit(classes[labels] + 0.15 * rng.normal(size=(40, D)))
    ood_x = _unit(np.eye(D)[C:6][rng.integers(0, 3, 30)] + 0.15 * rng.normal(size=(30, D)))
    return classes, labels, torch.tensor(id_x, dtype=torch.float32), torch.tensor(ood_x, dtype=torch.float32)


def _identity(net, x):
    return x  # the "network" hands over features already: the encoder passes them through


def test_openood_postprocessor_conventions(toy):
    classes, labels, id_x, ood_x = toy
    mcm = MCM().fit(classes)
    pp = OpenOODPostprocessor(mcm, encoder=_identity)
    pp.setup(None, {}, {})
    pred, conf = pp.postprocess(None, id_x)
    assert pred.dtype == torch.int64 and conf.dtype == torch.float32 and conf.shape == (40,)
    assert pred.tolist() == labels.tolist()
    np.testing.assert_allclose(conf.numpy(), mcm.score_samples(id_x.numpy()), rtol=1e-6)  # conf = score (higher = ID)
    _, conf_ood = pp.postprocess(None, ood_x)
    assert auroc(conf.numpy(), conf_ood.numpy()) == 1.0  # ID above OOD: OpenOOD's direction
    # OpenOOD's evaluator call: batches of {"data", "label"} dicts
    loader = [{"data": id_x[:25], "label": torch.tensor(labels[:25])}, {"data": id_x[25:], "label": torch.tensor(labels[25:])}]
    p, c, lab = pp.inference(None, loader)
    assert p.tolist() == labels.tolist() == lab.tolist()
    np.testing.assert_allclose(c, conf.numpy())


def test_pytorch_ood_detector_conventions(toy):
    classes, _, id_x, ood_x = toy
    mcm = MCM().fit(classes)
    det = pytorch_ood_detector(mcm)
    assert isinstance(det, FeaturesDetector) and det.fit(None) is det and det.fit_features(id_x, None) is det
    out_id, out_ood = det.predict_features(id_x), det.predict_features(ood_x)
    np.testing.assert_allclose(out_id.numpy(), -mcm.score_samples(id_x.numpy()), rtol=1e-6)  # larger = OOD
    metrics = OODMetrics()
    metrics.update(torch.cat([out_id, out_ood]), torch.tensor([0] * 40 + [-1] * 30))  # OOD label < 0
    res = metrics.compute()
    assert res["AUROC"] == pytest.approx(1.0) and res["FPR95TPR"] == pytest.approx(0.0)
    # pytorch-ood's AUROC on the flipped scores equals sayno's on its own (ID positive)
    s_id, s_ood = mcm.score_samples(id_x.numpy()), mcm.score_samples(ood_x.numpy())
    noisy = pytorch_ood_detector(MCM(tau=5.0).fit(_unit(classes + 0.6)))
    m2 = OODMetrics()
    a, b = noisy.predict_features(id_x), noisy.predict_features(ood_x)
    m2.update(torch.cat([a, b]), torch.tensor([0] * 40 + [-1] * 30))
    assert m2.compute()["AUROC"] == pytest.approx(auroc(-a.numpy(), -b.numpy()), abs=1e-6)
    assert auroc(s_id, s_ood) == 1.0
    from pytorch_ood.api import ModelNotSetException

    with pytest.raises(ModelNotSetException):
        det.predict(torch.zeros(1, 3, 32, 32))


def test_adapters_encode_images_through_a_backbone():
    bb = tiny_open_clip(0)
    names = ["cat", "dog", "car"]
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mcm = MCM(backbone=bb).fit(names)
    feats = bb.encode_image(pixels).numpy()
    _, conf = OpenOODPostprocessor(mcm).postprocess(bb, pixels)
    np.testing.assert_allclose(conf.numpy(), mcm.score_samples(feats), rtol=1e-5)
    det = pytorch_ood_detector(mcm, bb)
    np.testing.assert_allclose(det.predict(pixels).numpy(), -mcm.score_samples(feats), rtol=1e-5)
    # GL-MCM reads the backbone's image tokens (global + patches)
    gl = GLMCM(backbone=bb).fit(names)
    _, conf = OpenOODPostprocessor(gl).postprocess(bb, pixels)
    np.testing.assert_allclose(conf.numpy(), gl.score_samples(bb.encode_image_tokens(pixels).numpy()), rtol=1e-5)


def test_adaneg_streams_through_the_adapters(toy):
    classes, _, id_x, ood_x = toy
    neg = _unit(np.eye(D)[C:] + 0.01)
    x = torch.cat([id_x, ood_x])[torch.randperm(70, generator=torch.Generator().manual_seed(0))]
    ada = AdaNeg(negative_features=neg, batch_size=10, n_groups=2).fit(classes)
    whole = ada.score_samples(x.numpy())
    pp = OpenOODPostprocessor(ada, encoder=_identity)
    pp.setup(None, {}, {})  # a new stream
    confs = np.concatenate([pp.postprocess(None, x[s:s + 10])[1].numpy() for s in range(0, 70, 10)])
    np.testing.assert_allclose(confs, whole, rtol=1e-6)  # batch by batch = one stream
    det = pytorch_ood_detector(ada).fit(None)
    outs = np.concatenate([det.predict_features(x[s:s + 10]).numpy() for s in range(0, 70, 10)])
    np.testing.assert_allclose(outs, -whole, rtol=1e-6)


def test_adapters_refuse_unfitted_or_foreign_scorers():
    with pytest.raises(NotFittedError):
        OpenOODPostprocessor(MCM())
    with pytest.raises(InputError):
        pytorch_ood_detector(object())
