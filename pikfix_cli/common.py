"""Shared CLI helpers: the console (stderr, so --json stdout stays clean), errors, progress."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    """Print one error line, never wrapped, so scripts can grep it."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear error line (no traceback) and return the Exit for the caller to raise."""
    error(message)
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print one warning line, never wrapped."""
    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


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
