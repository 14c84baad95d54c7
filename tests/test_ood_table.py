"""The printed OOD table keeps every row name, including CLIPN's per-checkpoint "[label]" suffix."""

from rich.console import Console

from sayno.ood.bench import print_ood_table


def test_labelled_clipn_rows_are_printed_with_their_label():
    """Regression: "CLIPN-ATD [seed1]" was printed as "CLIPN-ATD" (rich read "[seed1]" as a style tag), so the
    three seeds' rows of ``sayno eval ood --clipn seed0=... --clipn seed1=...`` could not be told apart."""
    row = {"ood AUROC": 97.0, "ood FPR95": 10.0, "avg AUROC": 97.0, "avg FPR95": 10.0, "ID acc": 98.0}
    result = {"dataset": "id", "id": {"n": 3, "classes": 2}, "ood_sets": {"ood": {"n": 2}}, "shifted_id": {},
              "methods": {"MCM": row, "CLIPN-ATD [seed0]": row, "CLIPN-ATD [seed1]": row,
                          "CLIPN-ATD (mean of 2)": {**row, "avg AUROC std": 0.5}}}
    console = Console(record=True, width=200)
    print_ood_table(result, console)
    text = console.export_text()
    assert "CLIPN-ATD [seed0]" in text and "CLIPN-ATD [seed1]" in text and "CLIPN-ATD (mean of 2)" in text
    assert "97.00±0.50" in text
