"""`pikfix index`: embed a folder of colour reference photos once, for automatic reference choice.

`pikfix fix --refs DIR` keeps the same store in the cache by itself; running this command
first (for example overnight, on a GPU) only moves the embedding out of the fix run, and
`--out` makes a store that can be shared or passed to `fix --index`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import TaskID

from pikfix_cli.common import console, fail, progress_bar, warn


def index(
    refs_dir: Path = typer.Argument(..., help="Folder of colour reference photos (searched recursively)."),
    out: Optional[Path] = typer.Option(
        None, "-o", "--out", help="Store folder; default: the cache that `fix --refs REFS_DIR` uses."
    ),
    features: str = typer.Option(
        "effnet-lite0", "--features",
        help="Descriptor: effnet-lite0 (default: best measured), vgg19 (the paper's Gram/mean statistics; "
        "weights from `make weights`) or vgg19-torchvision (torchvision's weights in the torch hub cache).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    index_type: str = typer.Option(
        "auto", "--index-type", help="flat (exact), ivf (approximate) or auto (ivf from 100,000 photos)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Photos embedded per batch."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report on stdout (for scripts)."),
) -> None:
    """Build or update the reference store of REFS_DIR: only new and changed photos are embedded."""
    from pikfix.backbones import WeightsUnavailableError
    from pikfix.retrieval import StoreError, build_or_update, cache_store_dir, resolve_features

    try:
        feature_id = resolve_features(features)
    except ValueError as err:
        raise fail(f"--features: {err}") from None
    store_dir = out if out is not None else cache_store_dir(refs_dir, feature_id)
    start = time.perf_counter()
    bar = progress_bar(disable=json_out and not sys.stderr.isatty())
    tasks: list[TaskID] = []  # started on the first report: an unchanged store shows no bar

    def show(done: int, total: int) -> None:
        if not tasks:
            bar.start()
            tasks.append(bar.add_task("new or changed photos", total=total))
        bar.update(tasks[0], completed=done)

    try:
        try:
            report = build_or_update(
                refs_dir, store_dir, features=feature_id, device=device, index_type=index_type,
                batch_size=batch_size, progress=show,
            )
        finally:
            if tasks:  # stopped before any error is printed; a bar never started would print a blank line
                bar.stop()
    except WeightsUnavailableError as err:
        raise fail(f"--features {features}: {err} (--features effnet-lite0 works offline)") from None
    except (StoreError, ValueError) as err:  # ValueError: --device, --index-type
        raise fail(str(err)) from None
    seconds = time.perf_counter() - start

    if report.rebuilt_reason:
        warn(f"the previous store was damaged and has been rebuilt: {report.rebuilt_reason}")
    for path, reason in report.skipped:
        warn(f"skipped {path}: {reason}")
    if json_out:
        sys.stdout.write(json.dumps({**report.to_json(), "seconds": round(seconds, 2)}, indent=2) + "\n")
        return
    console.print(
        f"[bold]{report.total}[/] reference photos in {escape(str(report.store_dir))} "
        f"({len(report.added)} added, {len(report.updated)} updated, {len(report.removed)} removed, "
        f"{report.unchanged} unchanged, {len(report.skipped)} skipped) "
        f"[dim]{report.features}, {report.index_type} index, {seconds:.1f} s[/]",
        soft_wrap=True,
    )
