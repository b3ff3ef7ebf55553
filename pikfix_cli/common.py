"""Shared CLI helpers: the console (stderr, so --json stdout stays clean), errors, progress."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear error line (no traceback) and return the Exit for the caller to raise."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print one warning line."""
    console.print(f"[yellow]warning:[/] {message}")


def progress_bar(disable: bool = False) -> Progress:
    """The progress display every batch command uses."""
    return Progress(
        TextColumn("[bold]{task.description}", table_column=None),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
        transient=False,
    )
