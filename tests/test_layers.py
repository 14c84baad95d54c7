"""The layer contract (pyproject.toml [tool.importlinter]) and no hidden sayno imports inside functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sayno"

# Function-level sayno imports that are allowed, as (file relative to the repository, imported module) with the
# reason. Everything else imports sayno at module top, so that the import graph (and import-linter) sees it.
ALLOWED_FUNCTION_IMPORTS: dict[tuple[str, str], str] = {
    # open_clip takes seconds to import; the registry loads a backbone module only when a spec of its scheme
    # is loaded, so `sayno --help` and the numpy-only paths stay fast
    ("sayno/backbones/registry.py", "sayno.backbones.open_clip_backbone"): "open_clip import time",
    ("sayno/backbones/registry.py", "sayno.backbones.hf_backbone"): "open_clip import time",
    # the routes module imports fastapi, an optional extra (`pip install sayno[serve]`)
    ("sayno/serve/app.py", "sayno.serve.routes"): "fastapi is optional",
}


def test_import_contract_holds() -> None:
    """`lint-imports` (import-linter, in the test extra) passes: no upward import, no circle between layers."""
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.is_file(), f"import-linter is not installed next to {sys.executable} (pip install -e '.[test]')"
    run = subprocess.run([str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def _function_level_sayno_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``import sayno...`` / ``from sayno... import`` inside a function of ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "sayno"]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "sayno":
                found.append((node.lineno, node.module or ""))
    return sorted(set(found))


def test_no_function_level_sayno_imports() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, module in _function_level_sayno_imports(path):
            if (rel, module) not in ALLOWED_FUNCTION_IMPORTS:
                offenders.append(f"{rel}:{line}: {module}")
    assert not offenders, "sayno imports inside functions (move them to the module top):\n" + "\n".join(offenders)


def test_the_scan_sees_function_level_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from sayno.errors import SaynoError\n\n"
                      "def f():\n    from sayno.data import walk_images\n    import sayno.base.prompts\n"
                      "    import numpy\n    return walk_images\n")
    assert _function_level_sayno_imports(sample) == [(4, "sayno.data"), (5, "sayno.base.prompts")]
