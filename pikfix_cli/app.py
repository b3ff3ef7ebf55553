"""The `pikfix` Typer app. Commands live one per module; torch is imported lazily inside them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="pikfix",
    help="Restore and colorize old photographs, guided by colour reference photos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Attach each command module's function to the app (kept here so `--help` lists all)."""
    from pikfix_cli import bench, degrade, fix, index, train

    app.command("fix")(fix.fix)
    app.command("degrade")(degrade.degrade)
    app.command("train")(train.train)
    app.command("index")(index.index)
    app.command("bench")(bench.bench)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
