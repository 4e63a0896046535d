"""Options and arguments that every command spells the same way, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from gale_cli import output

Json = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print JSON on stdout instead of text; never prompt.",
        # The mode is set here, once, for all the output of the run; commands need not read it.
        callback=output.set_json,
    ),
]
Name = Annotated[str, typer.Argument(metavar="NAME", help="A deployment name.")]
