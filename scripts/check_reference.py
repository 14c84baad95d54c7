"""sayno against the reference code itself: CLIPGlasses (Codecode-X/CLIPGlasses) and CLIPN (xmed-lab/CLIPN).

Imports the reference modules from a checkout given on the command line (never from the repository), builds
them with seeded random weights, loads the same state into sayno's counterparts (strict), runs both on the same
random inputs and prints one row per quantity: the largest absolute difference, the largest magnitude of the
reference's output, their ratio and the tolerance. Exit status 1 if any row exceeds its tolerance, 2 if the
reference cannot be imported.

    python scripts/check_reference.py --glasses-ref /tmp/s31/ref/CLIPGlasses --clipn-ref /tmp/s31/ref/CLIPN

What is compared (reference -> sayno):
- CLIPGlassesLens.forward -> PaperLens(reference_quirks=True); CLIPGlassesFrame.forward (its ``lambda_dynamic``
  and scores, plain and chunked) -> PaperFrame(reference_quirks=True).lam / forward; Glasses.forward (detector
  mask, Lens, Frame) -> PaperLens + PaperFrame with the same mask; the Frame's scores -> the score formula
  sayno.glasses.modules.glasses_logits / glasses_pair_logits given the reference's lambda;
  CLIPGlassesLens.calc_losses -> sayno.glasses.train.lens_loss and Glasses.calc_losses ->
  sayno.glasses.paper_train.reference_contrastive_loss, values and gradients.
- CLIPN ClipLoss.forward (its multi-GPU branch, on a one-process gloo group) -> sayno.clipn.losses itbo_loss,
  tso_loss, values and gradients; CLIP.encode_text (yes tower; "no" tower with the mean prompt in eval mode and
  with the per-caption prompt draw in train mode) -> sayno's OpenClipTextTower and NoTextEncoder;
  zero_shot_infer.cal_all_metric's CTW and ATD scores -> sayno.clipn.infer ctw / atd.

Values the reference computes but does not return (the Frame's ``lambda_dynamic``, the detector mask, the drawn
prompt indices, the CTW/ATD score lists) are read from the reference function's own local variables when it
returns (``sys.settrace``), so nothing of the reference is restated here.

Stubbed imports (modules the checked code imports but does not use at run time), installed in
``sys.modules`` before the reference is imported: CLIPGlasses ``get_model`` (loads a CLIP checkpoint at import;
the stub provides only ``Clip_model.logit_scale`` = ln 100, what the Frame reads), ``utils`` (logger and seed
setters, no-ops: the logger would redirect stdout), the dataset modules ``GlassesDataset``, ``McqDataset``,
``RetrievalDataset_gtneg``, ``RetrievalDataset``, ``CCNegDataset_gtneg``, ``CLSDataset``; CLIPN
``classification``, ``tuning_cfg``, ``tuning_util`` (its ``maybe_dictionarize`` returns a dict batch unchanged,
as the original does; only dict batches are passed), and the package-relative ``timm_model`` / ``utils`` of
CLIPN's ``open_clip``, for which the installed open_clip's own modules stand in (the checked code uses only
``to_2tuple``). CLIPN's ``open_clip`` is imported under the name ``clipn_ref_open_clip`` (the installed
open_clip keeps its name: sayno's backbones use it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import math
import os
import sys
import tempfile
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RTOL = 1e-5  # gate: max |sayno - reference| <= RTOL * max |reference| (fp32)
TSO_EPS_REF, TSO_EPS_SAYNO = 1e-4, 1e-12  # TSO's epsilon inside the square root (docs/CLIPN.md, deviation table)


# ------------------------------------------------------------------------------------------ comparison helpers
@dataclass
class Row:
    """One compared quantity: ``diff`` = max |a - b|, ``scale`` = max |reference|, ``tol`` = allowed ``diff / scale``.
    A ``control`` row passes when it *exceeds* ``tol`` (it must differ: it shows that the check can fail)."""

    name: str
    shape: tuple[int, ...]
    diff: float
    scale: float
    tol: float
    note: str = ""
    control: bool = False

    @property
    def rel(self) -> float:
        return self.diff / self.scale if self.scale > 0 else (0.0 if self.diff == 0 else math.inf)

    @property
    def ok(self) -> bool:
        rel = self.rel
        if math.isnan(self.diff) or math.isnan(rel):  # NaN in an output, or shapes that differ: never a pass
            return False
        return bool(rel > self.tol) if self.control else bool(rel <= self.tol)


def compare(name: str, ours, ref, tol: float = RTOL, note: str = "", control: bool = False) -> Row:
    """Row for two arrays or tensors of the same shape (float64 arithmetic); a shape mismatch is a failed row
    (also for a control)."""
    a = np.asarray(ours.detach().cpu().double() if torch.is_tensor(ours) else ours, dtype=np.float64)
    b = np.asarray(ref.detach().cpu().double() if torch.is_tensor(ref) else ref, dtype=np.float64)
    if a.shape != b.shape:
        return Row(name, tuple(b.shape), math.nan, 1.0, tol, f"shape {a.shape} vs reference {b.shape}", control)
    if a.size == 0:
        return Row(name, a.shape, 0.0, 0.0, tol, note, control)
    return Row(name, a.shape, float(np.max(np.abs(a - b))), float(np.max(np.abs(b))), tol, note, control)


def table(rows: Sequence[Row]) -> str:
    """Markdown table of the rows."""
    out = ["| check | shape | max abs diff | max abs ref | rel | tolerance | pass | note |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = "x".join(str(s) for s in r.shape) or "scalar"
        tol = f"> {r.tol:.3g}" if r.control else f"{r.tol:.3g}"
        out.append(f"| {r.name} | {shape} | {r.diff:.3g} | {r.scale:.3g} | {r.rel:.3g} | {tol} | "
                   f"{'yes' if r.ok else 'NO'} | {r.note} |")
    return "\n".join(out)


def call_capturing(fn: Callable, code: types.CodeType, names: Sequence[str], *args, **kwargs):
    """``fn(*args, **kwargs)`` and ``{name: value}`` of the local variables ``names`` of the (last) frame running
    ``code`` at its return. Reads what the reference computed without restating its code."""
    captured: dict = {}

    def local(frame, event, arg):
        if event == "return":
            for n in names:
                if n in frame.f_locals:
                    captured[n] = frame.f_locals[n]
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is code else None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        out = fn(*args, **kwargs)
    finally:
        sys.settrace(old)
    missing = [n for n in names if n not in captured]
    if missing:
        raise RuntimeError(f"{code.co_name} returned without the local variable(s) {missing}")
    return out, captured


def randomise(module: nn.Module, seed: int, scale: float = 1.0) -> nn.Module:
    """Every parameter random, norm gains and biases too (no term hides behind an init value): vectors
    ``scale * N(0, 1)``, tensors of 2+ dimensions ``scale * N(0, 1) / sqrt(last dim)`` (variance-preserving for a
    ``Linear``), so that no sigmoid or softmax of the checked code saturates and every term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = scale / math.sqrt(p.shape[-1]) if p.dim() >= 2 else scale
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def tso_tolerances(g: torch.Tensor, gno: torch.Tensor) -> tuple[float, float]:
    """(loss, gradient) tolerances of sayno's TSO against the reference's, whose epsilon differs (documented).

    With ``x_i = ||g_i - gno_i||^2`` (unit rows), ``sqrt`` is concave, so
    ``|sqrt(x + e1) - sqrt(x + e2)| <= |e1 - e2| / (2 sqrt(x))`` and the loss (a mean) moves by at most the mean
    of that; the derivative ``1 / (2 sqrt(x + e))`` changes by a relative ``<= |e1 - e2| / (2 x)``. Each is added
    to RTOL, relative to the reference's largest value (the loss) or gradient entry (taken as the scale)."""
    x = ((F.normalize(g.double(), dim=-1) - F.normalize(gno.double(), dim=-1)) ** 2).sum(-1)
    de = TSO_EPS_REF - TSO_EPS_SAYNO
    loss_abs = float((de / (2 * x.sqrt())).mean())
    ref_loss = float((2 - (x + TSO_EPS_REF).sqrt()).mean())
    return RTOL + loss_abs / abs(ref_loss), RTOL + de / (2 * float(x.min()))


# ------------------------------------------------------------------------------------------ importing the reference
def _unavailable(what: str) -> Callable:
    def fn(*args, **kwargs):
        raise RuntimeError(f"{what} is stubbed by check_reference.py: the checked code does not need it")
    return fn


def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__stub__ = True
    sys.modules[name] = mod
    return mod


def _find(root: Path, rel: str) -> Path:
    """``root/rel`` or, when ``root`` already is that folder, ``root``."""
    for cand in (root / rel, root):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"{root}: no folder {rel}")


def import_glasses_reference(root: Path) -> types.SimpleNamespace:
    """Lens, Frame, NegDetector and Glasses modules of a CLIPGlasses checkout (exp/exp5_glasses)."""
    exp5 = _find(root, "exp/exp5_glasses")
    for f in ("Lens.py", "Frame.py", "NegDetector.py", "Glasses.py"):
        if not (exp5 / f).is_file():
            raise FileNotFoundError(f"{exp5}: missing {f}")

    class _Clip:  # what the Frame reads: the CLIP model's (log) logit scale
        logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))

    _stub("get_model", Clip_model=_Clip(), extract_sentence_features=_unavailable("get_model.extract_sentence_features"),
          extract_all_sentence_features=_unavailable("get_model.extract_all_sentence_features"))
    _stub("utils", setup_logger=lambda *a, **k: None, set_random_seed=lambda *a, **k: None)
    _stub("GlassesDataset", GlassesDataset=_unavailable("GlassesDataset"))
    _stub("McqDataset", McqDataset=_unavailable("McqDataset"), evaluate_model_mcq=_unavailable("evaluate_model_mcq"))
    _stub("RetrievalDataset_gtneg", RetrievalNegGtDataset=_unavailable("RetrievalNegGtDataset"),
          evaluate_model_retrieval_withGTNeg=_unavailable("evaluate_model_retrieval_withGTNeg"))
    _stub("RetrievalDataset", RetrievalDataset=_unavailable("RetrievalDataset"),
          evaluate_model_retrieval=_unavailable("evaluate_model_retrieval"),
          retrieval_collate_fn=_unavailable("retrieval_collate_fn"))
    _stub("CCNegDataset_gtneg", CCNegGtDataset=_unavailable("CCNegGtDataset"),
          evaluate_model_CCNeg_etrieval_withGTNeg=_unavailable("evaluate_model_CCNeg_etrieval_withGTNeg"))
    _stub("CLSDataset", CLSDataset=_unavailable("CLSDataset"), evaluate_model_CLS=_unavailable("evaluate_model_CLS"))
    sys.path.insert(0, str(exp5))
    try:
        mods = {n: importlib.import_module(n) for n in ("Lens", "Frame", "NegDetector", "Glasses")}
    finally:
        sys.path.remove(str(exp5))
    for n, m in mods.items():
        if not str(Path(m.__file__).resolve()).startswith(str(exp5.resolve())):
            raise ImportError(f"module {n} was imported from {m.__file__}, not from {exp5}")
    return types.SimpleNamespace(**mods, folder=exp5)


def import_clipn_reference(root: Path) -> types.SimpleNamespace:
    """CLIPN's open_clip model and loss and its zero_shot_infer, from a checkout (src/)."""
    import open_clip.timm_model
    import open_clip.utils

    src = _find(root, "src")
    pkg_dir = src / "open_clip"
    for f in (pkg_dir / "model.py", pkg_dir / "loss.py", src / "zero_shot_infer.py"):
        if not f.is_file():
            raise FileNotFoundError(f"missing {f}")
    pkg = types.ModuleType("clipn_ref_open_clip")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["clipn_ref_open_clip"] = pkg
    sys.modules["clipn_ref_open_clip.timm_model"] = open_clip.timm_model  # stand-ins (see the module docstring)
    sys.modules["clipn_ref_open_clip.utils"] = open_clip.utils
    model = importlib.import_module("clipn_ref_open_clip.model")
    loss = importlib.import_module("clipn_ref_open_clip.loss")
    _stub("classification", ViT_Classifier=_unavailable("ViT_Classifier"), load_model=_unavailable("load_model"))
    _stub("tuning_util", maybe_dictionarize=lambda batch: batch if isinstance(batch, dict) else
          _unavailable("maybe_dictionarize on a non-dict batch")(), **{n: _unavailable(n) for n in
          ("Places", "Textures", "ImageNet", "iNaturalist", "SUN")})
    _stub("tuning_cfg", parse_arguments=_unavailable("parse_arguments"))
    spec = importlib.util.spec_from_file_location("clipn_ref_zero_shot_infer", src / "zero_shot_infer.py")
    zsi = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = zsi
    spec.loader.exec_module(zsi)
    return types.SimpleNamespace(model=model, loss=loss, zero_shot_infer=zsi, folder=src)


# ------------------------------------------------------------------------------------------ CLIPGlasses
def reference_glasses(ref: types.SimpleNamespace, *, seed: int, lambda_0: float):
    """The reference's ``Glasses`` (Lens, Frame, detector) on CPU with seeded random weights, in eval mode."""
    cfg = {"device": "cpu", "dtype": torch.float32, "Lens": {"device": "cpu"},
           "Frame": {"device": "cpu", "lambda_0": lambda_0}, "NegationDetector": {"device": "cpu", "neg_thr": 0.5}}
    torch.manual_seed(seed)
    glasses = ref.Glasses.Glasses(cfg)
    for i, part in enumerate((glasses.lens, glasses.frame, glasses.negDetector)):
        randomise(part, seed + 1 + i)
    return glasses.eval()


def check_glasses(ref: types.SimpleNamespace, *, seed: int, batch: int, lambda_0: float) -> list[Row]:
    from sayno.glasses.modules import glasses_logits, glasses_pair_logits
    from sayno.glasses.paper import PaperFrame, PaperLens

    dim = 512  # the reference Lens hard-codes 512, and Glasses builds the Frame at its default width (512)
    glasses = reference_glasses(ref, seed=seed, lambda_0=lambda_0)
    lens = PaperLens(dim, reference_quirks=True)
    lens.load_state_dict(glasses.lens.state_dict(), strict=True)
    frame = PaperFrame(dim, lambda_0=lambda_0, reference_quirks=True)
    frame.load_state_dict(glasses.frame.state_dict(), strict=True)
    lens.eval(), frame.eval()

    g = torch.Generator().manual_seed(seed + 10)
    I, h = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    levels = torch.randn(batch, 4, dim, generator=g)
    rows = []
    with torch.no_grad():
        h_neg_ref = glasses.lens(h, levels)
        rows.append(compare("Glasses Lens h_neg (quirks)", lens(h, levels), h_neg_ref))
        mask = torch.arange(batch) % 3 != 1
        fwd = type(glasses.frame).forward.__code__
        s_ref, loc = call_capturing(glasses.frame, fwd, ["lambda_dynamic"], I, h, h_neg_ref, neg_mask=mask)
        lam_ref = loc["lambda_dynamic"]
        rows.append(compare("Glasses Frame lambda (quirks)", frame.lam(I, h, h_neg_ref), lam_ref.squeeze(-1),
                            note=f"ref lambda in [{float(lam_ref.min()):.3g}, {float(lam_ref.max()):.3g}]"))
        rows.append(compare("Glasses Frame scores, mask (quirks)", frame(I, h, h_neg_ref, mask), s_ref))
        rows.append(compare("Glasses Frame scores, no mask (quirks)", frame(I, h, h_neg_ref, None),
                            glasses.frame(I, h, h_neg_ref)))
        chunked = glasses.frame(I, h, h_neg_ref, neg_mask=mask, chunk_size=3)
        rows.append(compare("Glasses Frame scores, ref chunk_size=3", frame(I, h, h_neg_ref, mask), chunked))
        # the score formula given the reference's lambda: one slot (h_neg) per negated caption
        s = float(glasses.frame.logit_scale.exp())
        i_n, h_n, n_n = F.normalize(I, dim=-1), F.normalize(h, dim=-1), F.normalize(h_neg_ref, dim=-1)
        owner = torch.nonzero(mask).squeeze(-1)
        lam = lam_ref.squeeze(-1)[owner]
        formula = glasses_logits(h_n, i_n, n_n[owner], lam, owner, 0.0, s, clamp=True)
        rows.append(compare("score formula glasses_logits (ref lambda)", formula, s_ref,
                            note="sayno omits the ref's +1e-8 on h_neg"))
        pair = glasses_pair_logits(h_n, i_n, n_n[owner], lam, owner, 0.0, s, clamp=True)
        rows.append(compare("score formula glasses_pair_logits (ref lambda)", pair, torch.diagonal(s_ref)))
        rows.append(compare("Glasses PaperFrame.pair_scores vs ref diagonal", frame.pair_scores(I, h, h_neg_ref, mask),
                            torch.diagonal(s_ref)))
        # Glasses.forward end to end: the detector's mask, the Lens, the Frame
        gfwd = type(glasses).forward.__code__
        (t2i, i2t), gl = call_capturing(glasses, gfwd, ["neg_mask"], I, h, levels)
        neg_mask = gl["neg_mask"]
        ours = frame(I, h, lens(h, levels), neg_mask)
        rows.append(compare("Glasses.forward scores_T2I (quirks)", ours, t2i,
                            note=f"detector mask: {int(neg_mask.sum())}/{batch} negated"))
        rows.append(compare("Glasses.forward scores_I2T (quirks)", ours.T, i2t))
    return rows


def check_glasses_losses(ref: types.SimpleNamespace, *, seed: int, batch: int) -> tuple[list[Row], list[str]]:
    """CLIPGlassesLens.calc_losses and Glasses.calc_losses (values and gradients) against sayno's Lens loss
    (sayno.glasses.train.lens_loss) and the paper preset's contrastive loss
    (sayno.glasses.paper_train.reference_contrastive_loss). Returns rows and "not checked" lines."""
    rows: list[Row] = []
    skipped: list[str] = []
    g = torch.Generator().manual_seed(seed + 20)
    dim = 512
    cfg = {"device": "cpu", "dtype": torch.float32, "Lens": {"device": "cpu"},
           "Frame": {"device": "cpu", "lambda_0": 1.0}, "NegationDetector": {"device": "cpu", "neg_thr": 0.5}}
    torch.manual_seed(seed)
    glasses = ref.Glasses.Glasses(cfg)
    try:
        from sayno.glasses.train import lens_loss
    except ImportError as e:
        skipped.append(f"not checked: Lens loss (sayno.glasses.train.lens_loss: {e})")
    else:
        h_neg, obj, img, h = (torch.randn(batch, dim, generator=g) for _ in range(4))
        leaf_r = h_neg.clone().requires_grad_(True)
        loss_r = glasses.lens.calc_losses(leaf_r, obj, img, h)[0]
        (grad_r,) = torch.autograd.grad(loss_r, leaf_r)
        leaf_s = h_neg.clone().requires_grad_(True)
        loss_s = lens_loss(F.normalize(leaf_s, dim=-1), F.normalize(obj, dim=-1), F.normalize(img, dim=-1))
        (grad_s,) = torch.autograd.grad(loss_s, leaf_s)
        rows += [compare("Glasses Lens loss (calc_losses)", loss_s, loss_r),
                 compare("Glasses Lens loss d/dh_neg", grad_s, grad_r)]
    try:
        from sayno.glasses.paper_train import reference_contrastive_loss
    except ImportError as e:
        skipped.append(f"not checked: contrastive loss (sayno.glasses.paper_train.reference_contrastive_loss: {e})")
    else:
        n_img = max(2, batch // 2 + 1)  # every image has a caption (the reference's remapped image ids)
        cap2img = torch.cat([torch.arange(n_img), torch.randint(0, n_img, (batch,), generator=g)])[:max(batch, n_img)]
        S = 20 * torch.randn(len(cap2img), n_img, generator=g)  # scores of the size s*cos reaches (s = 100)

        def ref_loss(dtype):
            leaf = S.to(dtype).requires_grad_(True)
            loss = glasses.calc_losses(leaf, leaf.T, cap2img.numpy())[0]
            return loss, torch.autograd.grad(loss, leaf)[0]

        def our_loss(dtype):
            leaf = S.to(dtype).requires_grad_(True)
            loss = reference_contrastive_loss(leaf, torch.arange(len(cap2img)), cap2img)
            return loss, torch.autograd.grad(loss, leaf)[0]

        (l32, g32), (l64, g64) = our_loss(torch.float32), our_loss(torch.float64)
        (r32, h32), (r64, h64) = ref_loss(torch.float32), ref_loss(torch.float64)
        note = f"{len(cap2img)} captions, {n_img} images"
        rows += [compare("Glasses contrastive loss (fp32)", l32, r32, note=note),
                 compare("Glasses contrastive loss (fp64)", l64, r64, 1e-12),
                 compare("Glasses contrastive loss d/dS (fp64)", g64, h64, 1e-12),
                 compare("Glasses contrastive loss d/dS: sayno fp32 vs ref fp64", g32, h64,
                         note="the reference's own fp32 gradient: see below")]
        ref32 = compare("", h32, h64)
        skipped.append(f"not gated: the reference's fp32 contrastive-loss gradient against its own fp64 one: "
                       f"max abs diff {ref32.diff:.3g} (rel {ref32.rel:.3g}); its -log(exp-sum ratio) form "
                       "passes a ratio through fp32's denormal range when one score dominates a column")
    return rows, skipped


CONTROL_MIN = 10 * RTOL  # a control must fail the gate by a margin of 10: else the comparison has no teeth


def glasses_controls(ref: types.SimpleNamespace, *, seed: int, batch: int, lambda_0: float) -> list[Row]:
    """The same comparisons with sayno's defaults (the reference's defects fixed): they must differ, which
    shows that the checks above can fail."""
    from sayno.glasses.paper import PaperFrame, PaperLens

    glasses = reference_glasses(ref, seed=seed, lambda_0=lambda_0)
    lens, frame = PaperLens(512), PaperFrame(512, lambda_0=lambda_0)
    lens.load_state_dict(glasses.lens.state_dict(), strict=True)
    frame.load_state_dict(glasses.frame.state_dict(), strict=True)
    lens.eval(), frame.eval()
    g = torch.Generator().manual_seed(seed + 10)
    I, h = torch.randn(batch, 512, generator=g), torch.randn(batch, 512, generator=g)
    levels = torch.randn(batch, 4, 512, generator=g)
    with torch.no_grad():
        h_neg = glasses.lens(h, levels)
        _, loc = call_capturing(glasses.frame, type(glasses.frame).forward.__code__, ["lambda_dynamic"], I, h, h_neg)
        lam_rows = loc["lambda_dynamic"].expand(batch, batch)  # the reference: one lambda per caption (row)
        return [compare("control: PaperLens default h_neg", lens(h, levels), h_neg, CONTROL_MIN, control=True),
                compare("control: PaperFrame default lambda per (caption, image)", frame.lambda_matrix(I, h, h_neg),
                        lam_rows, CONTROL_MIN, "reference: the row's own image decides", control=True)]


# ------------------------------------------------------------------------------------------ CLIPN losses
def _one_process_group() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        fd, path = tempfile.mkstemp(prefix="check_reference_pg_")
        os.close(fd)
        os.unlink(path)
        dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)


def check_clipn_losses(ref: types.SimpleNamespace, *, seed: int, batch: int, dim: int, logit_scale: float,
                       dtype: torch.dtype) -> list[Row]:
    """ClipLoss.forward's multi-GPU branch (``world_size=2`` selects it; the gloo group has one process, so its
    all_gather is the identity) against sayno's itbo_loss / tso_loss: the three terms and their gradients."""
    from sayno.clipn.losses import itbo_loss, tso_loss

    _one_process_group()
    g = torch.Generator().manual_seed(seed)
    raw = [torch.randn(batch, dim, generator=g, dtype=dtype) for _ in range(3)]
    tag = "fp64" if dtype == torch.float64 else "fp32"
    tol = 1e-12 if dtype == torch.float64 else RTOL

    def inputs():
        leaves = [r.clone().requires_grad_(True) for r in raw]
        return leaves, [F.normalize(x, dim=-1) for x in leaves]

    loss = ref.loss.ClipLoss(world_size=2, gather_with_grad=True, rank=0)
    rows = []
    tso_tol, tso_grad_tol = tso_tolerances(raw[1], raw[2])
    tso_tol, tso_grad_tol = max(tso_tol, tol), max(tso_grad_tol, tol)
    for k, term in enumerate(("ITBO yes", "ITBO no", "TSO")):
        leaves_r, (f, t, tn) = inputs()
        out_r = loss(f, t, tn, logit_scale)[k]
        grads_r = torch.autograd.grad(out_r, leaves_r, allow_unused=True)
        leaves_s, (f, t, tn) = inputs()
        out_s = itbo_loss(f, t, tn, logit_scale)[k] if k < 2 else tso_loss(t, tn)
        grads_s = torch.autograd.grad(out_s, leaves_s, allow_unused=True)
        t_val, t_grad = (tso_tol, tso_grad_tol) if k == 2 else (tol, tol)
        note = f"eps {TSO_EPS_SAYNO:g} vs ref {TSO_EPS_REF:g} (documented); tol = bound" if k == 2 else ""
        rows.append(compare(f"CLIPN {term} loss ({tag})", out_s, out_r, t_val, note))
        for name, gs, gr in zip(("f", "g", "gno"), grads_s, grads_r):
            if gr is None and gs is None:
                continue
            gs = torch.zeros_like(raw[0]) if gs is None else gs
            gr = torch.zeros_like(raw[0]) if gr is None else gr
            rows.append(compare(f"CLIPN {term} d/d{name} ({tag})", gs, gr, t_grad))
    return rows


# ------------------------------------------------------------------------------------------ CLIPN "no" text encoder
def _no_name(name: str) -> str:
    """sayno tower parameter name -> the reference CLIP's "no" branch name."""
    for head in ("transformer", "positional_embedding", "ln_final", "text_projection", "token_embedding"):
        if name == head or name.startswith(head + "."):
            return head + "_no" + name[len(head):]
    raise KeyError(name)


def check_clipn_text(ref: types.SimpleNamespace, *, seed: int) -> list[Row]:
    """The reference CLIP's encode_text (yes tower, "no" tower) against sayno's tower and NoTextEncoder.

    A tiny CLIP (embed 32, text width 32, 2 heads, 4 layers, context 32) with random weights; the reference's
    ``token_embedding_no`` is set equal to ``token_embedding``, as its factory.load_state_dict copies it when
    it loads a pretrained CLIP (sayno shares the backbone's vocabulary table; see docs/CLIPN.md)."""
    from sayno.backbones.testing import tiny_open_clip
    from sayno.clipn.model import NoTextEncoder

    torch.manual_seed(seed)
    net = ref.model.CLIP(32, {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
                         {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 4})
    randomise(net, seed + 1)
    with torch.no_grad():
        net.token_embedding_no.weight.copy_(net.token_embedding.weight)
    state = net.state_dict()
    backbone = tiny_open_clip(seed, embed_dim=32, text_layers=4, context_length=32)
    text_keys = [k for k in backbone.model.state_dict() if not k.startswith("visual.") and k != "logit_scale"]
    missing = [k for k in text_keys if k not in state]
    if missing:
        raise RuntimeError(f"reference CLIP lacks sayno's text keys {missing[:3]}")
    with torch.no_grad():
        backbone.model.load_state_dict({k: state[k] for k in text_keys}, strict=False)
    enc = NoTextEncoder.from_backbone(backbone, variant="learnable", n_prompts=net.num_no_texts)
    load = {k: state[_no_name(k[len("tower."):])] for k in enc.trainable_state() if k.startswith("tower.")}
    load["prompts"] = state["prompt_no"]
    enc.load_trainable_state(load, "reference CLIPN state")  # strict: every key, every shape
    tokens = backbone.tokenize(["a photo of a dog", "there is no cat on the mat", "a red car", "no",
                                "a bird that is not flying over the sea", "an empty room without people"])
    rows = []
    with torch.no_grad():
        net.eval()
        rows.append(compare("CLIPN yes tower encode_text", backbone.text_tower()(tokens), net.encode_text(tokens)))
        rows.append(compare("CLIPN no tower, mean prompt (eval)", enc(tokens, "mean"), net.encode_text(tokens, "no")))
        net.train()
        np.random.seed(seed)
        out, loc = call_capturing(net.encode_text, type(net).encode_text.__code__, ["idx"], tokens, "no")
        idx = torch.as_tensor(loc["idx"])
        rows.append(compare("CLIPN no tower, per-caption draw (train)", enc(tokens, idx), out,
                            note=f"drawn prompts {idx.tolist()}"))
    return rows


# ------------------------------------------------------------------------------------------ CLIPN CTW / ATD
class _Host:
    """A batch entry whose ``.cuda()`` returns it on the CPU (cal_all_metric moves its inputs with ``.cuda()``)."""

    def __init__(self, value):
        self.value = value

    def cuda(self):
        return self.value


class _Logits:
    """The model cal_all_metric calls: images (as row indices) -> (logits, logits_no, None) from fixed tables."""

    def __init__(self, logits: torch.Tensor, logits_no: torch.Tensor):
        self.logits, self.logits_no = logits, logits_no

    def eval(self):
        return self

    def __call__(self, rows: torch.Tensor):
        return self.logits[rows], self.logits_no[rows], None


def check_clipn_scores(ref: types.SimpleNamespace, *, seed: int, dim: int, logit_scale: float) -> list[Row]:
    """zero_shot_infer.cal_all_metric's CTW / ATD scores (and AUROC) against sayno's ctw / atd on the same
    features: ``logits = s f.g``, ``logits_no = s f.gno`` for the reference, (f, g, gno) for sayno."""
    from sayno.clipn.infer import atd, clipn_probs, ctw
    from sayno.ood.metrics import auroc, fpr_at_tpr

    g = torch.Generator().manual_seed(seed)
    n_cls, n_id, n_ood = 10, 96, 96
    cls = F.normalize(torch.randn(n_cls, dim, generator=g), dim=-1)
    cls_no = F.normalize(torch.randn(n_cls, dim, generator=g) - 0.5 * cls, dim=-1)
    lab = torch.randint(0, n_cls, (n_id,), generator=g)
    f_id = F.normalize(cls[lab] + 0.9 * torch.randn(n_id, dim, generator=g) / math.sqrt(dim) * 8, dim=-1)
    f_ood = F.normalize(torch.randn(n_ood, dim, generator=g), dim=-1)
    f = torch.cat([f_id, f_ood])
    logits, logits_no = logit_scale * f @ cls.T, logit_scale * f @ cls_no.T
    model = _Logits(logits, logits_no)

    def loader(rows: torch.Tensor, labels: torch.Tensor, size: int = 40):
        return [{"images": _Host(rows[i:i + size]), "labels": _Host(labels[i:i + size])}
                for i in range(0, len(rows), size)]

    id_rows, ood_rows = torch.arange(n_id), torch.arange(n_id, n_id + n_ood)
    zsi = ref.zero_shot_infer
    names = ["ind_ctw", "ind_atd", "ood_ctw", "ood_atd", "res"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):  # its prints and progress bars
        warnings.simplefilter("ignore")
        _, loc = call_capturing(zsi.cal_all_metric, zsi.cal_all_metric.__code__, names,
                                loader(id_rows, lab), model, 0, {"synthetic": loader(ood_rows, torch.zeros(n_ood))})
    p, p_yes = clipn_probs(f.numpy(), cls.numpy(), cls_no.numpy(), logit_scale)
    d_ctw, d_atd = ctw(p, p_yes), atd(p, p_yes)
    ref_ctw = np.concatenate([np.ravel(loc["ind_ctw"]), np.ravel(loc["ood_ctw"])])
    ref_atd = np.concatenate([np.ravel(loc["ind_atd"]), np.ravel(loc["ood_atd"])])
    res = {r[1]: r for r in loc["res"]}
    rows = [compare("CLIPN CTW score", d_ctw.score, ref_ctw), compare("CLIPN ATD score", d_atd.score, ref_atd)]
    info = []
    for rule, d, r in (("CTW", d_ctw, ref_ctw), ("ATD", d_atd, ref_atd)):
        rows.append(compare(f"CLIPN {rule} AUROC: sayno auroc of the ref's scores", auroc(r[:n_id], r[n_id:]),
                            res[rule][3]))
        ties = f"{int((r[:n_id] == 1.0).sum())}/{n_id} ID, {int((r[n_id:] == 1.0).sum())}/{n_ood} OOD"
        info.append(f"not gated: {rule} AUROC of sayno's own (float64) scores {auroc(d.score[:n_id], d.score[n_id:]):.4f}"
                    f" vs the reference's (float32) {res[rule][3]:.4f}; reference scores equal to exactly 1.0: {ties}")
        info.append(f"not gated: {rule} FPR95 sayno fpr_at_tpr {fpr_at_tpr(d.score[:n_id], d.score[n_id:]):.4f} vs "
                    f"reference cal_auc_fpr {res[rule][4]:.4f} (sayno: share of OOD >= the threshold keeping 95% of "
                    "ID; reference: ROC curve interpolated at TPR 0.95)")
    return rows, info


# ------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glasses-ref", required=True, type=Path, help="CLIPGlasses checkout (or its exp/exp5_glasses)")
    ap.add_argument("--clipn-ref", required=True, type=Path, help="CLIPN checkout (or its src/)")
    ap.add_argument("--dim", type=int, default=512, help="feature width of the CLIPN checks (the Glasses "
                    "checks are at 512: the reference Lens hard-codes it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8, help="captions (= images) per Glasses / CLIPN loss batch")
    ap.add_argument("--lambda-0", type=float, default=1.0, help="the Frame's lambda_0 (reference config: 1)")
    ap.add_argument("--logit-scale", type=float, default=100.0, help="exp'd CLIP logit scale for CLIPN")
    args = ap.parse_args(argv)
    if args.batch < 2:
        ap.error("--batch must be at least 2 (the reference's ITBO 'no' term divides by N^2 - N)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*autocast.*")  # the reference Frame asks for CUDA autocast
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*", category=FutureWarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    no_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave the reference checkouts as they are (no __pycache__)
    try:
        gref = import_glasses_reference(args.glasses_ref)
        cref = import_clipn_reference(args.clipn_ref)
    except Exception as e:  # noqa: BLE001 - any import failure of the reference is reported in one line
        print(f"cannot import the reference code: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    finally:
        sys.dont_write_bytecode = no_bytecode
    print(f"reference CLIPGlasses: {gref.folder}\nreference CLIPN: {cref.folder}")
    print(f"torch {torch.__version__}, seed {args.seed}, CLIPN dim {args.dim}, batch {args.batch}, "
          f"lambda_0 {args.lambda_0}, logit scale {args.logit_scale}; gate: max|diff| <= tol * max|ref|")
    rows = check_glasses(gref, seed=args.seed, batch=args.batch, lambda_0=args.lambda_0)
    loss_rows, skipped = check_glasses_losses(gref, seed=args.seed, batch=args.batch)
    rows += loss_rows
    for dtype in (torch.float32, torch.float64):
        rows += check_clipn_losses(cref, seed=args.seed, batch=args.batch, dim=args.dim,
                                   logit_scale=args.logit_scale, dtype=dtype)
    rows += check_clipn_text(cref, seed=args.seed)
    score_rows, info = check_clipn_scores(cref, seed=args.seed, dim=args.dim, logit_scale=args.logit_scale)
    rows += score_rows
    print(table(rows))
    print("\n".join(skipped + info))
    controls = glasses_controls(gref, seed=args.seed, batch=args.batch, lambda_0=args.lambda_0)
    print("controls (sayno's defaults, reference_quirks=False: they must differ from the reference):")
    print(table(controls))
    rows += controls
    bad = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(bad)}/{len(rows)} rows within tolerance" + (": FAILED " + ", ".join(r.name for r in bad)
                                                                           if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
