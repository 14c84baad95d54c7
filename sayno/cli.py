"""The ``sayno`` command line: the root app; every area adds its own commands (``sayno/<area>/cli.py``).

    sayno world build OUT [--style openmoji] [--seed 0]
    sayno eval zeroshot|mcq|ccneg|retrieval --model SPEC --data PATH [--glasses CKPT] [--json] [--out DIR]
    sayno benchmark                      # the main job: every world benchmark on the embedded default
    sayno report DIR                     # aggregate result JSONs into one table
    sayno info --model SPEC
    sayno glasses ... | sayno clipn ... | sayno ood ... | sayno index build | sayno search | sayno serve
    sayno negation TEXT... [--json]     # what a caption negates, and why a query scored as it did

Each ``register(app)`` adds an area's commands (see :mod:`sayno.cliutil` for the convention).
"""

from __future__ import annotations

import typer

from sayno.backbones import cli as backbones_cli
from sayno.clipn import cli as clipn_cli
from sayno.eval import cli as eval_cli
from sayno.glasses import cli as glasses_cli
from sayno.negation import cli as negation_cli
from sayno.ood import cli as ood_cli
from sayno.search import cli as search_cli
from sayno.serve import cli as serve_cli
from sayno.world import cli as world_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="sayno: teach CLIP to say no (CLIPGlasses and CLIPN for any CLIP).")

backbones_cli.register(app)
world_cli.register(app)
eval_cli.register(app)
glasses_cli.register(app, report_hook=eval_cli.glasses_world_report)
clipn_cli.register(app)
ood_cli.register(app)
search_cli.register(app)
serve_cli.register(app)
negation_cli.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()
