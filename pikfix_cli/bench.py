"""`pikfix bench`: score models and baselines against ground truth, or time fixed photo sizes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from pikfix.config import DEFAULT_TILE
from pikfix_cli.common import console, fail, progress_bar, warn

if TYPE_CHECKING:  # torch-heavy imports stay out of `pikfix --help`
    from pikfix.benchmark.data import Dataset

DEFAULT_PRESETS = ("lite", "paper")
DEFAULT_SIZES = (0.25, 1.0, 12.0, 24.0)


def bench(
    folder: Optional[Path] = typer.Argument(
        None, help="Test folder, kind detected: RealOld <id>o/<id>t pairs, inputs/ + targets/, or clean photos "
        "(damaged on the fly). Without a reference option the reference is a crop of the ground truth.",
    ),
    out: Path = typer.Option(Path("pikfix-bench"), "-o", "--out", help="Report folder (its cache/ lets reruns resume)."),
    model: list[Path] = typer.Option([], "--model", help="Checkpoint; repeat for several (none: baselines only)."),
    realold: Optional[Path] = typer.Option(None, "--realold", help="Folder of RealOld pairs: <id>o.jpg + <id>t.jpg."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="Old photos, paired with --targets by file stem."),
    targets: Optional[Path] = typer.Option(None, "--targets", help="Folder of their restored colour ground truth."),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="Clean colour photos, damaged on the fly."),
    colorization_only: bool = typer.Option(False, "--colorization-only", help="--synthetic: grey input, no damage."),
    faded: bool = typer.Option(False, "--faded", help="--synthetic: faded colour prints, which should keep their colours."),
    val_split: bool = typer.Option(False, "--val-split", help="--synthetic: only a training run's validation photos."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="--val-split: the training run's val_fraction."),
    seed: int = typer.Option(0, "--seed", help="Seed of the damage, the --val-split and random-other references."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Only the first N photos (sorted by id)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="One colour reference photo for every image."),
    refs: Optional[Path] = typer.Option(None, "--refs", help="Folder of colour photos to retrieve references from."),
    index: Optional[Path] = typer.Option(None, "--index", help="Reference store built by `pikfix index`."),
    ref_mode: Optional[str] = typer.Option(
        None, "--ref-mode", help="file, auto, ground-truth-crop (upper bound), random-other [from --ref/--refs]."
    ),
    top_k: int = typer.Option(1, "--top-k", min=1, help="--ref-mode auto: references per photo given to the models."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also score the grey input and classical."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    work_size: int = typer.Option(512, "--work-size", help="Longest side (px) at which colour is predicted."),
    tile: int = typer.Option(DEFAULT_TILE, "--tile", help="Restoration tile size (px)."),
    tile_overlap: int = typer.Option(48, "--tile-overlap", help="Context around each tile (px)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore cached per-image results and recompute."),
    speed: bool = typer.Option(False, "--speed", help="Time fixed photo sizes per preset instead."),
    restoration: bool = typer.Option(
        False, "--restoration", help="--synthetic: score restoration alone (luminance) on the evaluation damage."
    ),
    recipe: Optional[str] = typer.Option(
        None, "--recipe",
        help="Damage of photos damaged on the fly: eval (default; never used in training), cracks (3-15 px); "
        "eval-no-local, eval-no-fade, eval-no-blur, eval-no-noise (eval with one step left out); "
        "--restoration also clean; the colour bench also training (pikfix.training.degradation).",
    ),
    long_side: int = typer.Option(512, "--long-side", help="--restoration: photos resized to this long side (px)."),
    restore_size: int = typer.Option(2048, "--restore-size", help="Longest side (px) at which models repair damage."),
    sharpen: bool = typer.Option(True, "--sharpen/--no-sharpen", help="--restoration: the models sharpen soft photos, as fix does."),
    presets: list[str] = typer.Option([], "--presets", help="--speed: presets, comma-separated [lite,paper]."),
    sizes: list[str] = typer.Option([], "--sizes", help="--speed: megapixels, comma-separated [0.25,1,12,24]."),
) -> None:
    """Benchmark restoration + colorization against ground truth (PSNR, SSIM, LPIPS, colourfulness, speed)."""
    from pikfix.benchmark.data import BenchError

    try:
        if speed:
            quality_options = {"DIR": folder, "--model": model, "--realold": realold, "--inputs": inputs, "--targets": targets,
                               "--synthetic": synthetic, "--ref": ref, "--refs": refs, "--index": index,
                               "--ref-mode": ref_mode}
            given = [name for name, value in quality_options.items() if value]
            if given:
                raise fail(f"--speed times presets on synthetic photos; {', '.join(given)} belong to quality runs")
            _speed(out, _split_list(presets, DEFAULT_PRESETS), _parse_sizes(sizes), device, work_size, tile, fresh)
            return
        if presets or sizes:
            raise fail("--presets and --sizes need --speed")
        if restoration:
            if synthetic is None and folder is None:
                raise fail("--restoration scores clean photos damaged on the fly: give a folder of photos")
            photos = synthetic if synthetic is not None else folder
            dataset = _dataset(None, None, None, None, photos, False, val_split, val_fraction, seed, False).head(max_images)
            _restoration(
                out, dataset, model, recipe or "eval", long_side, seed, device, tile, tile_overlap, restore_size, baselines, sharpen
            )
            return
        dataset = _dataset(folder, realold, inputs, targets, synthetic, colorization_only, val_split, val_fraction, seed, faded, recipe)
        if folder is not None and ref_mode is None and not (ref or refs or index):
            ref_mode = "ground-truth-crop"  # the design card's short form: matched references
        mode = _reference_mode(ref_mode, ref, refs, index)
        config = {
            "mode": "quality", "folder": folder, "kind": dataset.kind, "realold": realold, "inputs": inputs, "targets": targets, "synthetic": synthetic,
            "colorization_only": colorization_only, "faded": faded, "recipe": dataset.recipe if dataset.kind == "synthetic" else None,
            "top_k": top_k, "val_split": val_split, "val_fraction": val_fraction,
            "seed": seed, "max_images": max_images, "ref_mode": mode, "ref": ref, "refs": refs, "index": index,
            "models": model, "baselines": baselines, "device": device, "work_size": work_size, "tile": tile,
            "tile_overlap": tile_overlap, "fresh": fresh,
        }
        _quality(out, dataset.head(max_images), mode, {k: _plain(v) for k, v in config.items()})
    except BenchError as err:
        raise fail(str(err)) from None


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise fail(f"{out}: cannot create the report folder ({err.strerror or err})") from None


def _plain(value: Any) -> Any:
    """Paths as strings, so the config is JSON."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _split_list(values: list[str], default: tuple[str, ...]) -> list[str]:
    """Accept `--x a,b`, `--x a --x b` or nothing (the default)."""
    items = [item.strip() for value in values for item in value.split(",") if item.strip()]
    return items or list(default)


def _parse_sizes(values: list[str]) -> list[float]:
    try:
        return [float(v) for v in _split_list(values, tuple(str(s) for s in DEFAULT_SIZES))]
    except ValueError:
        raise fail(f"--sizes {','.join(values)}: not a list of megapixel numbers (e.g. 0.25,1,12,24)") from None


def _dataset(
    folder: Optional[Path], realold: Optional[Path], inputs: Optional[Path], targets: Optional[Path], synthetic: Optional[Path],
    colorization_only: bool, val_split: bool, val_fraction: float, seed: int, faded: bool, recipe: Optional[str] = None,
) -> "Dataset":
    """Exactly one test set from the options, with its unusable files listed as warnings."""
    from pikfix.benchmark.data import detect_dataset, realold_pairs, stem_pairs, synthetic_set

    sources = sum(x is not None for x in (folder, realold, synthetic)) + (inputs is not None or targets is not None)
    if sources != 1:
        raise fail("give one test set: DIR, --realold DIR, --inputs DIR --targets DIR, or --synthetic DIR")
    if (inputs is None) != (targets is None):
        raise fail("--inputs and --targets go together (old photos and their ground truth)")
    if synthetic is None and folder is None and (colorization_only or val_split or faded):
        raise fail("--colorization-only, --faded and --val-split apply to --synthetic only")
    if colorization_only and faded:
        raise fail("--colorization-only (grey inputs) and --faded (colour inputs) exclude each other")
    if recipe is not None and (colorization_only or faded or realold is not None or inputs is not None):
        raise fail("--recipe damages clean photos on the fly; not with --colorization-only, --faded or photo pairs")
    if folder is not None:
        if faded:
            raise fail("--faded applies to --synthetic DIR (clean photos faded on the fly)")
        dataset = detect_dataset(folder, colorization_only, seed, val_split, val_fraction, recipe or "eval")
        if recipe is not None and dataset.kind != "synthetic":
            raise fail(f"--recipe damages clean photos on the fly; {folder} holds {dataset.kind} photo pairs")
    elif realold is not None:
        dataset = realold_pairs(realold)
    elif inputs is not None and targets is not None:
        dataset = stem_pairs(inputs, targets)
    else:
        assert synthetic is not None
        dataset = synthetic_set(synthetic, colorization_only, seed, val_split, val_fraction, faded, recipe or "eval")
    for path, reason in dataset.skipped:
        warn(f"{path}: skipped ({reason})")
    dataset.require_samples()
    return dataset


def _reference_mode(ref_mode: Optional[str], ref: Optional[Path], refs: Optional[Path], index: Optional[Path]) -> str:
    """The reference mode asked for, or the one implied by --ref / --refs / --index."""
    from pikfix.benchmark.data import REF_MODES

    if refs is not None and index is not None:
        raise fail("give either --refs DIR or --index STORE, not both")
    if ref_mode is None:
        if ref is not None:
            return "file"
        if refs is not None or index is not None:
            return "auto"
        raise fail("missing references: give --ref FILE, --refs DIR, --index STORE, "
                   "or --ref-mode ground-truth-crop / random-other")
    if ref_mode not in REF_MODES:
        raise fail(f"--ref-mode {ref_mode}: unknown; choose one of {', '.join(REF_MODES)}")
    if ref is not None and ref_mode != "file":
        raise fail(f"--ref is a --ref-mode file option, not {ref_mode}")
    if (refs is not None or index is not None) and ref_mode != "auto":
        raise fail(f"--refs / --index are --ref-mode auto options, not {ref_mode}")
    return ref_mode


def _quality(out: Path, dataset: "Dataset", mode: str, config: dict[str, Any]) -> None:
    from pikfix.benchmark.data import References, StoreRetriever
    from pikfix.benchmark.report import summarize_run, write_quality_report
    from pikfix.benchmark.runner import Classical, GreyInput, InputAsIs, Method, load_models, run_quality

    models = load_models([Path(m) for m in config["models"]], config["device"], config["work_size"],
                         config["tile"], config["tile_overlap"])
    floor: Method = InputAsIs() if dataset.kind == "faded" else GreyInput()
    methods: list[Method] = [floor, Classical()] if config["baselines"] else []
    methods += models
    retriever = None
    if config["refs"] is not None:
        console.print(f"indexing {config['refs']} for automatic references (only new photos are embedded)")
        retriever = StoreRetriever.from_refs_dir(Path(config["refs"]), config["device"])
    elif config["index"] is not None:
        retriever = StoreRetriever(Path(config["index"]), config["device"])
    ref_file = Path(config["ref"]) if config["ref"] else None
    references = References(mode, dataset, config["seed"], ref_file, retriever, config["top_k"])
    _make_out(out)
    console.print(f"{dataset.describe()}; {len(methods)} methods; reference: {references.describe()}")
    console.print(f"per-image results are cached in {out / 'cache'}: rerun the same command to resume")
    with progress_bar() as bar:
        task = bar.add_task("benchmarking", total=len(dataset.samples))

        def on_image(done: int, sample: Any) -> None:
            bar.update(task, completed=done, description=sample.id)

        run = run_quality(dataset, methods, references, out, config["fresh"], on_image=on_image, warn=warn)
        bar.update(task, completed=len(dataset.samples), description="done")
    write_quality_report(out, run, config)
    _print_quality(summarize_run(run))
    console.print(f"report: {out / 'report.md'} ({len(run.images)} images, {run.from_cache} results from the cache)")


def _restoration(
    out: Path, dataset: "Dataset", models: list[Path], recipe: str, long_side: int, seed: int, device: str,
    tile: int, tile_overlap: int, restore_size: int, baselines: bool, sharpen: bool,
) -> None:
    from pikfix.benchmark.damage import RECIPES
    from pikfix.benchmark.restoration import classical_methods, model_method, run_restoration_bench
    from pikfix.checkpoint import CheckpointError
    from pikfix.pipeline import FixPipeline

    if recipe not in RECIPES:
        raise fail(f"--recipe {recipe}: unknown; choose one of {', '.join(RECIPES)}")
    methods = classical_methods(baselines)
    for path in models:
        try:
            pipe = FixPipeline.from_checkpoint(path, device, tile=tile, tile_overlap=tile_overlap, restore_size=restore_size,
                                               sharpen=sharpen)
        except (CheckpointError, ValueError) as err:
            raise fail(str(err)) from None
        methods.append(model_method(path.stem, pipe))
    _make_out(out)
    photos = [sample.truth for sample in dataset.samples]
    console.print(f"{len(photos)} photos at {long_side} px, damage recipe {recipe!r}, {len(methods)} methods")
    with progress_bar() as bar:
        task = bar.add_task("restoring", total=len(photos))
        report = run_restoration_bench(photos, methods, recipe, long_side, out, seed,
                                       progress=lambda name: bar.advance(task))
    console.print((out / "report.md").read_text(), soft_wrap=True, markup=False)
    console.print(f"report: {out / 'report.md'} ({report['photos']} photos)")


def _print_quality(summary: dict[str, dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="pikfix bench: mean [95 % CI]")
    for column in ("method", "PSNR dB", "SSIM", "LPIPS", "colourfulness", "s / image"):
        table.add_column(column)

    def cell(entry: dict[str, Any] | None, decimals: int) -> str:
        if entry is None:
            return "n/a"
        mean, (low, high) = entry["mean"], entry["ci95"]
        return f"{mean:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"

    for name, entry in summary.items():
        table.add_row(name, cell(entry["psnr"], 2), cell(entry["ssim"], 3), cell(entry["lpips"], 3),
                      cell(entry["colorfulness"], 1), f"{entry['seconds_per_image']['mean']:.2f}")
    console.print(table)


def _speed(out: Path, presets: list[str], sizes: list[float], device: str, work_size: int, tile: int,
           fresh: bool) -> None:
    from pikfix.benchmark.report import write_speed_report
    from pikfix.benchmark.runner import run_speed
    from pikfix.device import resolve_device

    from pikfix.benchmark.speed import describe

    def show(result: dict[str, Any]) -> None:
        if "error" in result:
            warn(describe(result))
        else:
            console.print(describe(result))

    _make_out(out)
    console.print(f"timing {len(presets) * len(sizes)} cases, one process each (cached in {out / 'cache'})")
    results = run_speed(presets, sizes, device, work_size, tile, out / "cache", fresh, on_case=show)
    config = {"mode": "speed", "presets": presets, "sizes": sizes, "device": device, "work_size": work_size,
              "tile": tile, "fresh": fresh}
    write_speed_report(out, results, config, resolve_device(device))  # valid: run_speed checked it
    console.print(f"report: {out / 'report.md'}")
