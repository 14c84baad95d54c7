"""``sayno negation "text" ... [--json]``: show how sayno reads the negation in a text (cues, negated phrases,
hedges, the affirmative remainder), so a user can see why a query scored as it did.

The lead wires it into ``sayno.cli`` with :func:`register`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sayno.cliutil import output_console
from sayno.errors import SaynoError
from sayno.negation.analyser import Analyser, default_analyser


def register(app: typer.Typer) -> None:
    """Add the ``negation`` command to ``app``."""

    @app.command("negation")
    def negation(
        texts: Annotated[list[str], typer.Argument(help="Texts (captions, queries) to analyse.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per text, in a list).")] = False,
        parser: Annotated[str, typer.Option(help="'spacy' (default) or 'rules' (sayno's original rules).")] = "spacy",
    ) -> None:
        """Show what each text negates: cues, negated phrases (object or predicate, with character spans), hedges,
        affirmative text, and the path Glasses take (parse | fallback | none)."""
        try:
            analyser = default_analyser() if parser == "spacy" else Analyser(parser)
            results = analyser.parse_many(texts)
        except SaynoError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
            return
        from rich.table import Table

        console = output_console()  # a table in a log or a file keeps its full width
        for r in results:
            console.print(f"[bold]{r.text!r}[/bold]  ({r.parser})")
            if not r.negated:
                console.print("  no negation cue found: the text keeps its plain CLIP score")
                continue
            console.print(f"  negated: yes   hedged: {'yes' if r.hedged else 'no'}   path: {r.path}   "
                          f"affirmative text: {r.affirmative_text!r}")
            if not r.phrases:
                console.print("  a cue, but no phrase found: Glasses read the whole caption (path 'fallback'; "
                              "a checkpoint without a caption-level Lens keeps the plain CLIP score)")
                continue
            table = Table(show_header=True, header_style="bold")
            for col in ("phrase (repelled)", "kind", "subject", "cue", "hedged", "span"):
                table.add_column(col)
            for p in r.phrases:
                table.add_row(p.text, p.kind, p.subject if p.kind == "predicate" else "", p.cue,
                              "yes" if p.hedged else "no", f"{p.start}-{p.end}")
            console.print(table)
