"""The shipped CLIPN for the embedded CLIP: it loads for its backbone and tells fresh ID scenes from unseen
concepts (a golden test in the spirit of open_clip's test_inference_simple)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHIPPED = Path(__file__).resolve().parent.parent / "sayno" / "weights" / "clipn-embedded.safetensors"




def _images(concepts, seed: int):
    from sayno.world.scenes import make_scene, render_scene
    from sayno.world.styles import get_style

    rng = np.random.default_rng([seed, 12345])  # not a stream the world's splits use
    style = get_style("openmoji")
    return [render_scene(make_scene(((c, 1),), rng, 64), style) for c in concepts]


def test_shipped_clipn_separates_id_from_unseen_concepts(embedded):
    from sayno.clipn.checkpoint import load_clipn, read_clipn
    from sayno.world.build import split_rng
    from sayno.world.concepts import pretrain_concepts, unseen_concepts

    _, meta = read_clipn(SHIPPED)
    assert meta["backbone_fingerprint"] == embedded.fingerprint
    assert SHIPPED.stat().st_size < 25e6
    model = load_clipn(SHIPPED, embedded)
    pre = list(pretrain_concepts())
    order = split_rng(0, "ood_split").permutation(len(pre))
    id_classes = [pre[i] for i in order[:50]]  # the world's ID classes (seed 0)
    # 20 ID scenes vs all 42 unseen concepts: over four render seeds ATD's AUROC measured 0.89-0.96 (this pair 0.89)
    id_imgs = _images(id_classes[:20], 1)
    ood_imgs = _images(list(unseen_concepts()), 2)
    texts = model.class_texts([c.name for c in id_classes])
    f_id = embedded.encode_image(id_imgs).numpy()
    f_ood = embedded.encode_image(ood_imgs).numpy()
    d_id, d_ood = model.decide(f_id, texts, "atd"), model.decide(f_ood, texts, "atd")
    assert (d_id.pred == np.arange(20)).mean() >= 0.85
    assert (~d_id.is_ood).mean() >= 0.85  # ATD's own rule keeps ID images (it is lenient on OOD: see docs)
    from sayno.ood.metrics import auroc

    assert auroc(d_id.score, d_ood.score) >= 0.85
