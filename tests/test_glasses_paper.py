"""The paper's Lens and Frame (sayno.glasses.paper) against an independent re-statement of the reference code.

``RefLens`` / ``RefFrame`` below restate ``CLIPGlassesLens`` / ``CLIPGlassesFrame`` (Codecode-X/CLIPGlasses,
exp/exp5_glasses, MIT) as the reference writes them: the same parameter names and shapes, the forward step
by step with the reference's loops and its quirks. They are test oracles, not part of sayno.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sayno.glasses.paper import PaperFrame, PaperLens

D = 32  # any width divisible by 8 (the transformer's heads); the reference's 512 is checked for shapes only


def _seq(dim):
    return nn.Sequential(nn.Linear(dim, dim, bias=False), nn.GELU(), nn.LayerNorm(dim))


class RefLens(nn.Module):
    def __init__(self, dim=512):
        super().__init__()
        self.embed_dim = dim
        self.res_gate = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())
        self.syntax_proj = nn.ModuleList([_seq(dim) for _ in range(3)])
        self.semantic_k_proj = _seq(dim)
        self.semantic_v_proj = nn.ModuleList([_seq(dim) for _ in range(3)])
        self.attention_log_scale = nn.Parameter(torch.log(torch.tensor([1.0, 0.8, 0.6])))
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Dropout(0.1),
                                 nn.Linear(2 * dim, dim), nn.LayerNorm(dim))

    def forward(self, h, level_h_list):
        syntax_feats = [self.syntax_proj[i](level_h_list[:, i, :]) for i in range(3)]
        K = self.semantic_k_proj(h)
        Vs = [proj(h) for proj in self.semantic_v_proj]
        c_neg = 0
        scale_factor = torch.sqrt(torch.tensor(self.embed_dim, dtype=torch.float32))
        for i in range(3):
            A = torch.bmm(syntax_feats[i].unsqueeze(1), K.unsqueeze(-1)).squeeze(-1) / scale_factor
            A = F.softmax(A * self.attention_log_scale[i], dim=0)
            c_neg = c_neg + A * Vs[i]
        gate = torch.sigmoid(self.res_gate(c_neg))
        c_neg = gate * c_neg + (1 - gate) * h
        return self.ffn(c_neg)


class RefFrame(nn.Module):
    def __init__(self, dim=512, hidden=2048, lambda_0=1.0):
        super().__init__()
        self.lambda_0 = lambda_0
        self.register_buffer("logit_scale", torch.tensor(math.log(100.0)))
        self.cross_transformer = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model=dim, nhead=8, dim_feedforward=hidden, dropout=0.3,
                                       activation="gelu", batch_first=True, layer_norm_eps=1e-6),
            num_layers=3, enable_nested_tensor=False)
        self.lambda_generator = nn.ModuleDict({
            "cross_attn": nn.MultiheadAttention(embed_dim=dim, num_heads=4, dropout=0.2, batch_first=True),
            "gate_controller": nn.Sequential(nn.Linear(2 * dim, 1), nn.Sigmoid())})
        self.alpha = nn.Parameter(torch.ones(1) * 0.1)

    def forward(self, I, h, h_neg, neg_mask=None):
        I_norm = F.normalize(I, p=2, dim=-1)
        h_norm = F.normalize(h, p=2, dim=-1)
        h_neg_norm = F.normalize(h_neg, p=2, dim=-1) + 1e-8
        cross = self.cross_transformer(torch.cat([h_norm.unsqueeze(1), I_norm.unsqueeze(1)], dim=1))
        h_attn = self.alpha * h_norm + cross[:, 0]
        attn_output, _ = self.lambda_generator["cross_attn"](
            query=h_attn.unsqueeze(1), key=h_neg_norm.unsqueeze(1), value=h_neg_norm.unsqueeze(1))
        lambda_base = self.lambda_generator["gate_controller"](torch.cat([h_attn, attn_output.squeeze(1)], dim=-1))
        lambda_dynamic = F.gelu(self.lambda_0 * lambda_base)
        logit_scale = self.logit_scale.exp()
        scores_base = logit_scale * (h_norm @ I_norm.t())
        adjusted = torch.clamp(lambda_dynamic * (logit_scale * (h_neg_norm @ I_norm.t())), min=0.0)
        if neg_mask is None:
            return scores_base.detach() - adjusted
        return torch.where(neg_mask.bool().view(-1, 1), scores_base.detach() - adjusted, scores_base)


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _randomise(module, seed):
    """Random weights everywhere (LayerNorm gains and biases too), so no term hides behind an init value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def _roundtrip(src, dst, tmp_path):
    path = tmp_path / "ref.pt"
    torch.save(src.state_dict(), path)
    dst.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return dst.eval()


def test_state_dict_keys_and_shapes_are_the_references_at_512():
    assert _shapes(PaperLens()) == _shapes(RefLens())
    assert _shapes(PaperFrame()) == _shapes(RefFrame())
    assert len(PaperLens().state_dict()) == 32 and len(PaperFrame().state_dict()) == 44


def test_lens_with_quirks_equals_the_reference_forward(tmp_path):
    torch.manual_seed(0)
    ref = _randomise(RefLens(D), 1)
    ours = _roundtrip(ref, PaperLens(D, reference_quirks=True), tmp_path)
    h, levels = torch.randn(6, D), torch.randn(6, 4, D)
    with torch.no_grad():
        torch.testing.assert_close(ours(h, levels), ref(h, levels), rtol=1e-5, atol=1e-5)


def test_frame_with_quirks_equals_the_reference_forward(tmp_path):
    torch.manual_seed(0)
    ref = _randomise(RefFrame(D, 64, lambda_0=1.5), 2)
    ours = _roundtrip(ref, PaperFrame(D, 64, lambda_0=1.5, reference_quirks=True), tmp_path)
    I, h, h_neg = torch.randn(5, D), torch.randn(5, D), torch.randn(5, D)
    mask = torch.tensor([True, False, True, True, False])
    with torch.no_grad():
        for m in (mask, None):
            torch.testing.assert_close(ours(I, h, h_neg, m), ref(I, h, h_neg, m), rtol=1e-5, atol=1e-4)


def test_default_lens_does_not_depend_on_the_batch_and_quirks_do(tmp_path):
    torch.manual_seed(0)
    ref = _randomise(RefLens(D), 3)
    fixed = _roundtrip(ref, PaperLens(D), tmp_path)
    quirky = _roundtrip(ref, PaperLens(D, reference_quirks=True), tmp_path)
    h, levels = torch.randn(6, D), torch.randn(6, 3, D)
    with torch.no_grad():
        torch.testing.assert_close(fixed(h[:1], levels[:1]), fixed(h, levels)[:1], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(quirky(h[:1], levels[:1]), quirky(h, levels)[:1], atol=1e-3)
        a = fixed.attention(h, levels)
        torch.testing.assert_close(a.sum(1), torch.ones(6))  # weights over one caption's layers


def test_default_frame_scores_each_pair_with_its_own_lambda(tmp_path):
    torch.manual_seed(0)
    ref = _randomise(RefFrame(D, 64), 4)
    fixed = _roundtrip(ref, PaperFrame(D, 64, chunk=7), tmp_path)
    quirky = _roundtrip(ref, PaperFrame(D, 64, reference_quirks=True), tmp_path)
    I, h, h_neg = torch.randn(4, D), torch.randn(4, D), torch.randn(4, D)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        s = fixed(I, h, h_neg)
        torch.testing.assert_close(fixed(I[perm], h, h_neg), s[:, perm])  # no score depends on the row's image
        torch.testing.assert_close(torch.diagonal(s), fixed.pair_scores(I, h, h_neg))
        torch.testing.assert_close(torch.diagonal(quirky(I, h, h_neg)), quirky.pair_scores(I, h, h_neg),
                                   rtol=1e-5, atol=1e-4)
        q = quirky(I, h, h_neg)
        assert not torch.allclose(quirky(I[perm], h, h_neg), q[:, perm], atol=1e-3)  # the reference's leak
        assert fixed(I[:3], h, h_neg).shape == (4, 3)  # any number of images
    with pytest.raises(ValueError, match="as many images"):
        quirky(I[:3], h, h_neg)


def test_affirmative_rows_keep_the_plain_score():
    torch.manual_seed(0)
    frame = _randomise(PaperFrame(D, 64), 5)
    I, h, h_neg = torch.randn(3, D), torch.randn(2, D), torch.randn(2, D)
    with torch.no_grad():
        s = frame(I, h, h_neg, torch.tensor([False, True]))
        plain = 100.0 * F.normalize(h, dim=-1) @ F.normalize(I, dim=-1).T
        torch.testing.assert_close(s[0], plain[0])
        assert torch.all(s[1] <= plain[1] + 1e-4)  # the clamped repulsion only lowers
