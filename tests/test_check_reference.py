"""The comparison helpers of scripts/check_reference.py, on sayno against sayno (no reference code needed).

The script itself runs against the reference checkouts (docs/experiments/reference-parity.md); here its pieces
are checked on quantities whose answer is known: equal tensors pass, a perturbation fails, a shape mismatch
fails, controls pass only when they differ, locals are read from a sayno function as it returns.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from sayno.glasses.paper import PaperFrame, PaperLens


@pytest.fixture(scope="module")
def cr(scripts):
    with scripts("scripts/check_reference.py") as module:
        yield module


def test_compare_passes_equal_and_fails_a_perturbation(cr):
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    assert cr.compare("same", x, x.clone()).ok
    row = cr.compare("tiny", x * (1 + 1e-7), x)
    assert row.ok and 0 < row.rel < cr.RTOL
    bad = cr.compare("perturbed", x + 1e-3 * x.abs().max(), x)
    assert not bad.ok and bad.rel == pytest.approx(1e-3, rel=1e-3)


def test_compare_fails_shape_mismatch_and_nan_even_as_control(cr):
    x = torch.zeros(3, 2)
    for control in (False, True):
        assert not cr.compare("shape", torch.zeros(2, 3), x, control=control).ok
        assert not cr.compare("nan", torch.full((3, 2), math.nan), x, control=control).ok


def test_control_rows_pass_only_when_they_differ(cr):
    x = torch.ones(3)
    assert not cr.compare("c", x, x, 1e-4, control=True).ok
    assert cr.compare("c", x * 1.01, x, 1e-4, control=True).ok


def test_table_marks_failures(cr):
    rows = [cr.compare("good", torch.ones(2), torch.ones(2)), cr.compare("bad", torch.zeros(2), torch.ones(2))]
    text = cr.table(rows)
    assert text.count("\n") == 3 and "| good | 2 |" in text and "| NO |" in text


def test_call_capturing_reads_a_sayno_local_at_return(cr):
    torch.manual_seed(0)
    frame = cr.randomise(PaperFrame(16, 32, reference_quirks=True), 1).eval()
    I, h, h_neg = torch.randn(3, 16), torch.randn(3, 16), torch.randn(3, 16)
    before = sys.gettrace()
    with torch.no_grad():
        out, loc = cr.call_capturing(frame, PaperFrame.forward.__code__, ["lam"], I, h, h_neg)
        assert cr.compare("lam", frame.lam(I, h, h_neg).unsqueeze(-1), loc["lam"]).ok
        assert cr.compare("scores", frame(I, h, h_neg), out).ok
        with pytest.raises(RuntimeError, match="without the local"):
            cr.call_capturing(frame, PaperFrame.forward.__code__, ["no_such_local"], I, h, h_neg)
    assert sys.gettrace() is before  # the previous tracer (a debugger's, coverage's) is restored


def test_randomise_is_seeded_and_scaled_by_fan_in(cr):
    a = cr.randomise(PaperLens(64), 3)
    b = cr.randomise(PaperLens(64), 3)
    c = cr.randomise(PaperLens(64), 4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["ffn.0.weight"], sc["ffn.0.weight"])
    w = sa["ffn.4.weight"]  # (64, 128): std 1/sqrt(128)
    assert w.std().item() == pytest.approx(1 / math.sqrt(128), rel=0.1)
    assert sa["ffn.5.weight"].std().item() == pytest.approx(1.0, rel=0.3)  # a norm gain: N(0, 1)


def test_sayno_paper_modules_against_themselves_through_the_helpers(cr):
    torch.manual_seed(0)
    ref = cr.randomise(PaperLens(32, reference_quirks=True), 5).eval()
    ours = PaperLens(32, reference_quirks=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    fixed = PaperLens(32)
    fixed.load_state_dict(ref.state_dict(), strict=True)
    h, levels = torch.randn(6, 32), torch.randn(6, 3, 32)
    with torch.no_grad():
        assert cr.compare("same mode", ours.eval()(h, levels), ref(h, levels)).ok
        assert cr.compare("other mode", fixed.eval()(h, levels), ref(h, levels), cr.CONTROL_MIN, control=True).ok


def test_tso_tolerance_is_the_epsilon_bound(cr):
    # orthogonal unit rows: x = ||g - gno||^2 = 2 for every row
    g = torch.eye(4, 8, dtype=torch.float64)
    gno = torch.roll(torch.eye(4, 8, dtype=torch.float64), 4, dims=1)
    loss_tol, grad_tol = cr.tso_tolerances(g, gno)
    de = cr.TSO_EPS_REF - cr.TSO_EPS_SAYNO
    ref_loss = 2 - math.sqrt(2 + cr.TSO_EPS_REF)
    assert loss_tol == pytest.approx(cr.RTOL + de / (2 * math.sqrt(2)) / ref_loss)
    assert grad_tol == pytest.approx(cr.RTOL + de / 4)
    # the bound covers the actual difference of the two square roots
    assert abs(math.sqrt(2 + cr.TSO_EPS_REF) - math.sqrt(2 + cr.TSO_EPS_SAYNO)) <= de / (2 * math.sqrt(2))


def test_main_reports_a_missing_reference_in_one_line(cr, tmp_path, capsys):
    assert cr.main(["--glasses-ref", str(tmp_path / "none"), "--clipn-ref", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cannot import the reference code") and "\n" not in err
