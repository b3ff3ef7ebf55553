"""Reference retrieval: descriptors, the store's incremental updates, integrity checks and search."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from pikfix.backbones import WeightsUnavailableError
from pikfix.color import luminance
from pikfix.retrieval import (
    DescriptorExtractor,
    ReferenceStore,
    StoreCorruptError,
    StoreError,
    build_or_update,
    cache_store_dir,
)
from pikfix.retrieval.background import map_in_background
from pikfix.retrieval.descriptor import EFFNET_FEATURES, VGG19_FEATURES, similarity
from pikfix.retrieval.update import photo_grey

N_REFS = 6


def _photo(seed: int, size: int = 96) -> np.ndarray:
    """A distinct synthetic colour picture: a smooth random colour field plus a few shapes."""
    rng = np.random.default_rng(seed)
    field = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(field).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, size - 24, 2))
        w, h = (int(v) for v in rng.integers(12, 48, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour)
    return np.asarray(img)


def _save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def _damaged_l(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """The photo as a query: grey (Lab L in [0, 100]), blurred, with a white scratch and noise."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(1.0))
    ImageDraw.Draw(img).line([(0, int(rng.integers(0, 96))), (95, int(rng.integers(0, 96)))], fill="white", width=2)
    l = luminance(np.asarray(img, dtype=np.float32) / 255.0)
    return np.clip(l + rng.normal(0.0, 3.0, l.shape), 0.0, 100.0).astype(np.float32)


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> Path:
    """N_REFS distinct colour photos, one in a subfolder (folders are searched recursively)."""
    folder = tmp_path_factory.mktemp("refs")
    for i in range(N_REFS):
        _save(folder / ("sub" if i == 0 else "") / f"p{i}.png", _photo(i))
    return folder


@pytest.fixture(scope="module")
def built(refs, tmp_path_factory) -> Path:
    """A store of ``refs``, built once; tests that change it work on a copy."""
    store = tmp_path_factory.mktemp("store") / "s"
    build_or_update(refs, store, device="cpu")
    return store


@pytest.fixture()
def embedded(monkeypatch) -> list[int]:
    """Sizes of the batches the network embeds (a spy on DescriptorExtractor.embed)."""
    sizes: list[int] = []
    original = DescriptorExtractor.embed

    def spy(self, batch):
        sizes.append(batch.shape[0])
        return original(self, batch)

    monkeypatch.setattr(DescriptorExtractor, "embed", spy)
    return sizes


def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


# --------------------------------------------------------------------------- search


def test_grey_damaged_photo_retrieves_its_colour_original(built):
    store = ReferenceStore.open(built, expected_features="effnet-lite0", device="cpu")
    assert len(store) == N_REFS
    for i in range(N_REFS):
        matches = store.search(_damaged_l(_photo(i), seed=i), k=3)
        assert matches[0].path.name == f"p{i}.png", (i, matches)
        assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
        assert len({m.path for m in matches}) == 3
        assert matches[0].path.is_file()


def test_undamaged_grey_matches_itself_on_every_term(built):
    store = ReferenceStore.open(built, device="cpu")
    best = store.search(luminance(_photo(3).astype(np.float32) / 255.0), k=1)[0]
    assert best.path.name == "p3.png"
    assert best.texture > 0.99 and best.structure > 0.99 and best.layout > 0.99


def test_search_takes_numpy_or_torch_of_any_layout_and_refuses_normalised_l(built):
    store = ReferenceStore.open(built, device="cpu")
    l = _damaged_l(_photo(5))
    from_numpy = store.search(l, k=2)
    from_torch = store.search(torch.from_numpy(l)[None, None], k=2)
    assert [m.path for m in from_numpy] == [m.path for m in from_torch]
    assert len(store.search(l, k=50)) == N_REFS  # k beyond the store: everything, once
    with pytest.raises(ValueError, match="normalised"):
        store.search(l / 50.0 - 1.0)
    with pytest.raises(ValueError, match="one grey image"):
        store.search(np.stack([l, l]))
    with pytest.raises(ValueError, match="k must be"):
        store.search(l, k=0)


def test_descriptor_blocks_split_into_texture_and_structure():
    extractor = DescriptorExtractor(device="cpu")
    batch = torch.stack([photo_grey(_photo(0)), photo_grey(_photo(1))])
    d = extractor.embed(batch)
    assert d.vectors.shape == (2, extractor.dim) and d.thumbs.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(d.vectors, axis=1), 1.0, atol=1e-5)
    texture, structure = similarity(d.vectors[0], d.vectors, extractor.blocks)
    np.testing.assert_allclose([texture[0], structure[0]], 1.0, atol=1e-5)
    # The FAISS inner product is exactly the equal-weight sum the re-ranker splits it into.
    np.testing.assert_allclose(d.vectors @ d.vectors[0], 0.5 * texture + 0.5 * structure, atol=1e-5)
    assert texture[1] < 0.99


# --------------------------------------------------------------------------- incremental updates


def test_update_embeds_only_new_and_changed_photos(tmp_path, refs, embedded):
    folder = shutil.copytree(refs, tmp_path / "refs")
    store = tmp_path / "store"
    first = build_or_update(folder, store, device="cpu")
    assert sorted(first.added) == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert sum(embedded) == N_REFS

    embedded.clear()
    _save(folder / "p1.png", _photo(101))  # changed content
    _save(folder / "new.png", _photo(102))  # added
    (folder / "p2.png").unlink()  # deleted
    stat = (folder / "p3.png").stat()
    os.utime(folder / "p3.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes
    report = build_or_update(folder, store, device="cpu")
    assert (report.added, report.updated, report.removed) == (["new.png"], ["p1.png"], ["p2.png"])
    assert report.unchanged == N_REFS - 2 and report.total == N_REFS
    assert sum(embedded) == 2  # the touched file was hashed, not embedded

    reopened = ReferenceStore.open(store, device="cpu")
    assert reopened.search(_damaged_l(_photo(101)), k=1)[0].path == folder / "p1.png"
    assert reopened.search(_damaged_l(_photo(102)), k=1)[0].path == folder / "new.png"
    assert folder / "p2.png" not in reopened.paths

    embedded.clear()
    manifest = (store / "manifest.json").read_bytes()
    again = build_or_update(folder, store, device="cpu")
    assert (again.added, again.updated, again.removed, again.unchanged) == ([], [], [], N_REFS)
    assert sum(embedded) == 0
    assert (store / "manifest.json").read_bytes() == manifest  # nothing changed: nothing rewritten
    assert sorted(p.name for p in store.iterdir()) == sorted([".lock", "manifest.json", _manifest(store)["data_dir"]])


def test_unreadable_photos_are_skipped_and_listed(tmp_path, refs):
    folder = shutil.copytree(refs, tmp_path / "refs")
    (folder / "notes.jpg").write_text("not a photo")
    truncated = folder / "cut.png"
    truncated.write_bytes((folder / "p1.png").read_bytes()[:200])
    report = build_or_update(folder, tmp_path / "store", device="cpu")
    assert sorted(path for path, _ in report.skipped) == ["cut.png", "notes.jpg"]
    assert all(reason and "\n" not in reason for _, reason in report.skipped)
    assert report.total == N_REFS
    assert {p.name for p in ReferenceStore.open(tmp_path / "store").paths} == {f"p{i}.png" for i in range(N_REFS)}


def test_empty_or_missing_refs_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    with pytest.raises(StoreError, match="no images found"):
        build_or_update(tmp_path / "empty", tmp_path / "store")
    with pytest.raises(StoreError, match="not a folder"):
        build_or_update(tmp_path / "missing", tmp_path / "store")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_text("nope")
    with pytest.raises(StoreError, match="none of the 1 images could be read"):
        build_or_update(bad, tmp_path / "store")
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_never_writes_into_a_folder_of_someone_elses_files(tmp_path, refs):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.txt").write_text("keep me")
    (out / "manifest.json").write_text("{ someone else's, broken")
    with pytest.raises(StoreError, match="not empty and not a reference store"):
        build_or_update(refs, out)
    assert sorted(p.name for p in out.iterdir()) == ["holiday.txt", "manifest.json"]
    assert (out / "manifest.json").read_text() == "{ someone else's, broken"


def test_ivf_index_on_request(tmp_path, refs):
    store = tmp_path / "store"
    report = build_or_update(refs, store, index_type="ivf", device="cpu")
    assert report.index_type == "ivf"
    opened = ReferenceStore.open(store, device="cpu")
    assert opened.index_type == "ivf"
    assert opened.search(_damaged_l(_photo(4)), k=1)[0].path.name == "p4.png"
    assert build_or_update(refs, store, index_type="flat", device="cpu").index_type == "flat"


# --------------------------------------------------------------------------- integrity


def _data_file(store: Path, name: str) -> Path:
    return store / _manifest(store)["data_dir"] / name


def _truncate_index(store: Path) -> None:
    path = _data_file(store, "index.faiss")
    path.write_bytes(path.read_bytes()[:-64])


def _flip_thumbnail_byte(store: Path) -> None:
    path = _data_file(store, "thumbs.npy")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(store: Path) -> None:
    manifest = _manifest(store)
    manifest["entries"][0]["path"] = "someone-else.png"  # valid JSON, stale checksum
    (store / "manifest.json").write_text(json.dumps(manifest))


def _truncate_manifest(store: Path) -> None:
    path = store / "manifest.json"
    path.write_bytes(path.read_bytes()[:300])


def _delete_data(store: Path) -> None:
    shutil.rmtree(store / _manifest(store)["data_dir"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate_index, "index.faiss: checksum mismatch"),
        (_flip_thumbnail_byte, "thumbs.npy: checksum mismatch"),
        (_edit_manifest, "manifest checksum mismatch"),
        (_truncate_manifest, "damaged manifest"),
        (_delete_data, "missing"),
    ],
)
def test_damaged_store_is_detected(built, tmp_path, damage, message):
    store = shutil.copytree(built, tmp_path / "store")
    damage(store)
    with pytest.raises(StoreCorruptError, match=message):
        ReferenceStore.open(store)


def test_update_rebuilds_a_damaged_store(built, refs, tmp_path):
    store = shutil.copytree(built, tmp_path / "store")
    _truncate_index(store)
    report = build_or_update(refs, store, device="cpu")
    assert report.rebuilt_reason and "checksum mismatch" in report.rebuilt_reason
    assert len(report.added) == N_REFS
    assert ReferenceStore.open(store).search(_damaged_l(_photo(5)), k=1)[0].path.name == "p5.png"


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no reference store here"):
        ReferenceStore.open(tmp_path / "nothing")


def test_stores_of_different_features_never_mix(built, refs, tmp_path):
    with pytest.raises(StoreError, match=f"built with features {EFFNET_FEATURES}, not {VGG19_FEATURES}"):
        ReferenceStore.open(built, expected_features="vgg19")
    store = shutil.copytree(built, tmp_path / "store")
    before = (store / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match="cannot be mixed"):
        build_or_update(refs, store, features="vgg19")
    assert (store / "manifest.json").read_bytes() == before
    other = _save(tmp_path / "other" / "x.png", _photo(50)).parent
    with pytest.raises(StoreError, match="holds the store of"):
        build_or_update(other, store)  # another refs folder: refused, not overwritten
    assert (store / "manifest.json").read_bytes() == before


def test_vgg19_without_weights_says_how_to_install_them(no_vgg19_weights):
    with pytest.raises(WeightsUnavailableError, match=f"VGG19 weights not found at {no_vgg19_weights}; install them once with `make weights`"):
        DescriptorExtractor("vgg19")
    with pytest.raises(WeightsUnavailableError, match="never downloads"):
        DescriptorExtractor("vgg19-torchvision")


def test_killed_update_leaves_the_previous_store_usable(tmp_path, refs, monkeypatch):
    folder = shutil.copytree(refs, tmp_path / "refs")
    store = tmp_path / "store"
    build_or_update(folder, store, device="cpu")
    before = (store / "manifest.json").read_bytes()
    _save(folder / "new.png", _photo(103))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the new data folder is written, the manifest not yet replaced

    monkeypatch.setattr("pikfix.retrieval.update.write_text_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        build_or_update(folder, store, device="cpu")
    assert (store / "manifest.json").read_bytes() == before
    survivor = ReferenceStore.open(store, device="cpu")
    assert folder / "new.png" not in survivor.paths
    assert survivor.search(_damaged_l(_photo(2)), k=1)[0].path.name == "p2.png"

    monkeypatch.undo()
    assert build_or_update(folder, store, device="cpu").added == ["new.png"]
    data_dirs = [p.name for p in store.iterdir() if p.is_dir()]
    assert data_dirs == [_manifest(store)["data_dir"]]  # the killed run's orphan is cleaned up


def test_failure_while_embedding_stops_the_decoder_and_keeps_the_store(tmp_path, refs, monkeypatch):
    folder = shutil.copytree(refs, tmp_path / "refs")
    store = tmp_path / "store"
    build_or_update(folder, store, device="cpu")
    before = sorted(p.name for p in store.iterdir())
    for i in range(3):
        _save(folder / f"more{i}.png", _photo(200 + i))

    def broken(self, batch):
        raise RuntimeError("device lost")

    monkeypatch.setattr(DescriptorExtractor, "embed", broken)
    with pytest.raises(RuntimeError, match="device lost"):
        build_or_update(folder, store, device="cpu", batch_size=1)
    assert not any(t.name == "pikfix-decode" for t in threading.enumerate())
    assert sorted(p.name for p in store.iterdir()) == before


# --------------------------------------------------------------------------- helpers


def test_background_map_keeps_order_and_reraises():
    assert list(map_in_background(lambda x: x * 2, range(50), buffer=3)) == [x * 2 for x in range(50)]

    def fragile(x: int) -> int:
        if x == 3:
            raise ValueError("bad item")
        return x

    got: list[int] = []
    with pytest.raises(ValueError, match="bad item"):
        for value in map_in_background(fragile, range(10)):
            got.append(value)
    assert got == [0, 1, 2]


def test_background_map_stops_when_the_consumer_stops():
    results = map_in_background(lambda x: x, itertools.count(), buffer=2)
    assert [next(results), next(results)] == [0, 1]
    results.close()  # what a `break` or an exception in the consumer does
    assert not any(t.name == "pikfix-decode" for t in threading.enumerate())


def test_cache_store_dir_is_per_folder_and_per_features(tmp_path, monkeypatch):
    monkeypatch.setenv("PIKFIX_CACHE", str(tmp_path / "cache"))
    a = cache_store_dir(tmp_path / "a")
    assert a.is_relative_to(tmp_path / "cache")
    assert a == cache_store_dir(tmp_path / "x" / ".." / "a", "effnet-lite0-stats-v1")
    assert a != cache_store_dir(tmp_path / "b")
    assert a != cache_store_dir(tmp_path / "a", "vgg19")
