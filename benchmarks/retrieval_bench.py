"""Reference retrieval: indexing speed, FAISS search latency and retrieval accuracy.

    .venv/bin/python benchmarks/retrieval_bench.py --photos /work/shared/data/photos [--features vgg19 effnet-lite0]

Each descriptor (``--features``) is measured in turn:

1. Indexing: `build_or_update` on the photo folder into a temporary store (cold, including
   the network's start-up), then an unchanged rerun.
2. Accuracy: every photo becomes a grey query, lightly damaged (5 % crop, blur, noise, a white
   scratch, JPEG 60) and fully damaged (the same crop, then `pikfix.training.degradation`'s training
   recipe), and is searched among all the colour photos. Reported: its own colour original at
   rank 1 and in the top 5, and for photos with a category in their name (animal, monument,
   musician, sea) how often the best *other* photo shares it (a related reference is what a
   user without the original gets; P@5: the share of the 5 best other photos that do). "faiss" ranks by texture + structure alone, "reranked"
   is what `ReferenceStore.search` returns.
3. FAISS latency: the store's descriptors replicated with noise to 10k and 100k vectors;
   one query at a time (as `pikfix fix` searches), top-5 and the re-ranker's top-32, flat and
   IVF, and how often IVF's 32 candidates still hold the photo's own original.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from pikfix.color import normalize_l
from pikfix.training.degradation import degrade_seeded
from pikfix.imageio import find_images, read_image
from pikfix.color import luminance
from pikfix.device import resolve_device
from pikfix.retrieval import DescriptorExtractor, ReferenceStore, build_or_update
from pikfix.retrieval.store import RERANK_CANDIDATES
from pikfix.retrieval.update import build_index

QUERY_SIDE = 512  # queries are degraded at this long side (the fix pipeline's working size)


def _category(name: str) -> str | None:
    """Category from the photo collection's file names; None for uncategorised photos."""
    match = re.match(r"gcompris__(\w+)-", name)
    if match is None:
        return None
    group = match.group(1)
    if name.startswith("gcompris__resource-sea"):
        return "sea"
    if group in ("animals", "resource"):
        return "animal"
    if group == "music":
        return "musician"
    return "monument"  # egypt, france, germany, india, usa, wonders


def _shrink(rgb: np.ndarray, side: int) -> np.ndarray:
    img = Image.fromarray(rgb)
    img.thumbnail((side, side), Image.BILINEAR)
    return np.asarray(img)


def _crop(rgb: np.ndarray, rng: np.random.Generator, fraction: float = 0.05) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, bottom = (int(v) for v in rng.integers(0, h * fraction, 2))
    left, right = (int(v) for v in rng.integers(0, w * fraction, 2))
    return rgb[top : h - bottom, left : w - right]


def _light_damage(rgb: np.ndarray, seed: int) -> np.ndarray:
    """Cropped, blurred, noisy, scratched, JPEG 60 -> Lab L (H, W) in [0, 100]."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(_crop(rgb, rng)).filter(ImageFilter.GaussianBlur(1.0))
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = np.clip(a + rng.normal(0.0, 0.02, a.shape), 0.0, 1.0)
    img = Image.fromarray((a * 255).astype(np.uint8))
    w, h = img.size
    ImageDraw.Draw(img).line([(0, int(rng.integers(h))), (w - 1, int(rng.integers(h)))], fill="white", width=3)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=60)
    return luminance(np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0)


def _full_damage(rgb: np.ndarray, seed: int) -> np.ndarray:
    """Cropped, then pikfix.training.degradation's training recipe -> Lab L (H, W) in [0, 100]."""
    cropped = _crop(rgb, np.random.default_rng(seed)).astype(np.float32) / 255.0
    grey = degrade_seeded(cropped, seed).grey  # sRGB-encoded grey with the L of the damaged photo
    return luminance(np.repeat(grey[:, :, None], 3, axis=2))


def bench_indexing(photos: Path, store_dir: Path, device: str, features: str) -> ReferenceStore:
    start = time.perf_counter()
    report = build_or_update(photos, store_dir, features=features, device=device)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    build_or_update(photos, store_dir, features=features, device=device)
    rerun = time.perf_counter() - start
    print(f"indexing {report.features}: {report.total} photos in {cold:.1f} s cold = {report.total / cold:.1f} images/s "
          f"(decode + embed, incl. network start-up); unchanged rerun {rerun:.2f} s; "
          f"{len(report.skipped)} skipped", flush=True)
    return ReferenceStore.open(store_dir, device=device)


def bench_accuracy(store: ReferenceStore, extractor: DescriptorExtractor) -> dict[str, np.ndarray]:
    """Prints accuracy per damage kind; returns the query vectors per kind for the FAISS part."""
    names = [p.name for p in store.paths]
    categories = [_category(n) for n in names]
    originals = [_shrink(read_image(p).pixels, QUERY_SIDE) for p in store.paths]
    query_vectors = {}
    for kind, damage in (("light", _light_damage), ("full", _full_damage)):
        own1 = {"faiss": 0, "reranked": 0}
        own5 = {"faiss": 0, "reranked": 0}
        related = {"faiss": [], "reranked": []}
        related5 = {"faiss": [], "reranked": []}
        seconds = []
        vectors = []
        for i, rgb in enumerate(originals):
            l = damage(rgb, seed=i)
            start = time.perf_counter()
            matches = store.search(l, k=RERANK_CANDIDATES)
            seconds.append(time.perf_counter() - start)
            vectors.append(extractor.embed_grey(normalize_l(torch.from_numpy(l))).vectors[0])
            rankings = {
                "reranked": [m.path.name for m in matches],
                "faiss": [m.path.name for m in sorted(matches, key=lambda m: -(m.texture + m.structure))],
            }
            for method, ranked in rankings.items():
                own1[method] += ranked[0] == names[i]
                own5[method] += names[i] in ranked[:5]
                if categories[i] is not None:
                    others = [categories[names.index(n)] == categories[i] for n in ranked if n != names[i]][:5]
                    related[method].append(others[0])
                    related5[method].append(np.mean(others))
        n = len(originals)
        for method in ("faiss", "reranked"):
            print(f"accuracy ({kind} damage, {method:8s}): own original top-1 {own1[method] / n:.3f}, "
                  f"top-5 {own5[method] / n:.3f}; other photos of the same category P@1 "
                  f"{np.mean(related[method]):.3f}, P@5 {np.mean(related5[method]):.3f} "
                  f"({len(related[method])} queries)", flush=True)
        print(f"query latency (grey {QUERY_SIDE} px -> ranked references, {n} photos): "
              f"{1000 * np.median(seconds):.1f} ms median", flush=True)
        query_vectors[kind] = np.stack(vectors)
    return query_vectors


def _replicate(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors: the real ones first, then noisy copies (cosine ~0.9 to their source)."""
    dim = vectors.shape[1]
    copies = vectors[rng.integers(0, len(vectors), n - len(vectors))]
    copies = copies + rng.normal(0.0, 0.45 / np.sqrt(dim), copies.shape).astype(np.float32)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return np.ascontiguousarray(np.concatenate([vectors, copies]), dtype=np.float32)


def bench_faiss(stored: np.ndarray, queries: np.ndarray, sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    own = np.arange(len(queries))  # query i's original is stored row i
    for n in sizes:
        vectors = _replicate(stored, n, rng)
        results = {}
        for kind in ("flat", "ivf"):
            start = time.perf_counter()
            index, _, nprobe = build_index(vectors, kind)
            if nprobe is not None:
                index.nprobe = nprobe
            built = time.perf_counter() - start
            timing = {}
            for k in (5, RERANK_CANDIDATES):
                start = time.perf_counter()
                found = [index.search(q[None], k)[1][0] for q in queries]
                timing[k] = 1000 * (time.perf_counter() - start) / len(queries)
                results[kind, k] = found
            extra = f", nprobe {nprobe} of {index.nlist} lists" if nprobe is not None else ""
            print(f"faiss {kind:4s} {n:>7,} vectors: build {built:6.1f} s, search top-5 {timing[5]:.2f} ms, "
                  f"top-{RERANK_CANDIDATES} {timing[RERANK_CANDIDATES]:.2f} ms per query{extra}", flush=True)
        recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(results["flat", 5], results["ivf", 5], strict=True)])
        kept = np.mean([own[i] in found for i, found in enumerate(results["ivf", RERANK_CANDIDATES])])
        kept_flat = np.mean([own[i] in found for i, found in enumerate(results["flat", RERANK_CANDIDATES])])
        print(f"faiss ivf  {n:>7,} vectors: recall@5 vs flat {recall:.3f}; own original among the "
              f"{RERANK_CANDIDATES} candidates {kept:.3f} (flat {kept_flat:.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("/work/shared/data/photos"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--features", nargs="+", default=["vgg19", "effnet-lite0"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if not find_images([args.photos]):
        parser.error(f"{args.photos}: no photos")
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="pikfix-retrieval-bench-"))
    try:
        for features in args.features:
            store = bench_indexing(args.photos, work / features, args.device, features)
            extractor = DescriptorExtractor(store.features, resolve_device(args.device))
            print(f"{store.features}: {extractor.dim} dims, weights: {extractor.weights_source}", flush=True)
            queries = bench_accuracy(store, extractor)
            bench_faiss(store.descriptors()[0], queries["full"], args.sizes)
    finally:
        shutil.rmtree(work)
    print(f"load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()
