"""photosearch.index: real hnswlib on files in tmp_path."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import hnswlib
import numpy as np
import pytest

from photosearch.index import IndexCorruptError, RWLock, VectorIndex, exact_search, hnsw, recall_at_k

D = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def mixture(n: int, dim: int, seed: int = 0, clusters: int = 50, spread: float = 0.6) -> np.ndarray:
    """Normalised vectors from a Gaussian mixture: clustered like real embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return unit(centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim)))


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    return np.arange(100, 1100, dtype=np.int64), mixture(1000, D)


@pytest.fixture
def index(data) -> VectorIndex:
    ids, vecs = data
    ix = VectorIndex(D, capacity=64)
    ix.add(ids, vecs)
    return ix


def test_hnswlib_facts_we_rely_on():
    """hnswlib 0.8.0 behaviours VectorIndex is built on; if one changes, hnsw.py needs a look."""
    vecs = mixture(20, 8)
    p = hnswlib.Index(space="ip", dim=8)
    p.init_index(max_elements=30, ef_construction=50, M=8)
    p.add_items(vecs, np.arange(20))
    p.mark_deleted(3)
    assert 3 in p.get_ids_list() and p.get_current_count() == 20  # deleted labels are still listed and counted
    with pytest.raises(RuntimeError):
        p.mark_deleted(3)  # already deleted
    with pytest.raises(RuntimeError):
        p.mark_deleted(99)  # unknown
    with pytest.raises(RuntimeError):
        p.get_items([3])  # deleted labels cannot be read
    p.add_items(vecs[5:6], [3])  # re-adding a deleted label replaces and undeletes it
    assert p.knn_query(vecs[5], k=2)[0][0].tolist() in ([3, 5], [5, 3])
    with pytest.raises(RuntimeError):
        p.knn_query(vecs[0], k=21)  # more than the live count
    with pytest.raises(RuntimeError):
        p.add_items(mixture(15, 8, seed=1), np.arange(100, 115))  # past max_elements ...
    assert p.get_current_count() == 30  # ... after adding part of the batch: grow before adding


def test_add_and_search_returns_nearest_with_cosine_scores(index, data):
    ids, vecs = data
    rng = np.random.default_rng(1)
    queries = unit(vecs[:20] + 0.05 * rng.normal(size=(20, D)))
    got_ids, got_scores = index.search(queries, k=5)
    assert got_ids.shape == (20, 5) and got_ids.dtype == np.int64 and got_scores.dtype == np.float32
    assert got_ids[:, 0].tolist() == ids[:20].tolist()
    position = {int(i): n for n, i in enumerate(ids)}
    cosine = np.array([[vecs[position[int(i)]] @ q for i in row] for row, q in zip(got_ids, queries)])
    np.testing.assert_allclose(got_scores, cosine, atol=1e-5)
    assert (np.diff(got_scores, axis=1) <= 1e-6).all()  # best first
    one_ids, one_scores = index.search(vecs[7], k=3)  # a single (D,) query gives one row
    assert one_ids.shape == (1, 3) and one_ids[0, 0] == ids[7] and one_scores[0, 0] == pytest.approx(1, abs=1e-5)


def test_k_is_capped_by_live_count_and_empty_index_returns_nothing():
    ix = VectorIndex(D)
    got_ids, got_scores = ix.search(mixture(2, D), k=10)
    assert got_ids.shape == (2, 0) and got_scores.shape == (2, 0)
    ix.add(np.array([1, 2, 3]), mixture(3, D))
    ix.remove([2])
    got_ids, _ = ix.search(mixture(1, D, seed=4)[0], k=10)
    assert sorted(got_ids[0].tolist()) == [1, 3]


def test_upsert_replaces_vector(index, data):
    ids, vecs = data
    new = unit(np.random.default_rng(2).normal(size=(1, D)))
    index.add(ids[:1], new)
    assert len(index) == len(ids)
    np.testing.assert_allclose(index.vectors([ids[0]]), new, atol=1e-6)
    got_ids, got_scores = index.search(new[0], k=1)
    assert got_ids[0, 0] == ids[0] and got_scores[0, 0] == pytest.approx(1, abs=1e-5)
    assert index.search(vecs[0], k=1)[1][0, 0] < 0.99  # the old vector is gone


def test_repeated_id_in_one_batch_keeps_the_last_vector():
    ix = VectorIndex(D)
    vecs = mixture(3, D)
    ix.add(np.array([7, 8, 7]), vecs)
    assert len(ix) == 2
    np.testing.assert_allclose(ix.vectors([7]), vecs[2:3], atol=1e-6)


def test_remove_hides_ids_and_len_drops(index, data):
    ids, vecs = data
    gone = ids[:10]
    assert index.remove(list(gone) + [999_999]) == 10  # unknown ids are ignored
    assert index.remove(gone) == 0  # already removed
    assert len(index) == len(ids) - 10
    assert ids[0] not in index and ids[10] in index
    assert np.array_equal(index.ids(), ids[10:])
    got_ids, _ = index.search(vecs[:10], k=50)
    assert not np.isin(got_ids, gone).any()
    with pytest.raises(KeyError):
        index.vectors(gone[:1])


def test_re_adding_a_removed_id_restores_it(index, data):
    ids, vecs = data
    index.remove([ids[3]])
    new = unit(vecs[3] + vecs[4])
    index.add(ids[3:4], new[None])
    assert ids[3] in index and len(index) == len(ids) and index.deleted_fraction == 0
    np.testing.assert_allclose(index.vectors([ids[3]])[0], new, atol=1e-6)
    assert index.search(new, k=1)[0][0, 0] == ids[3]


def test_grows_past_initial_capacity():
    ix = VectorIndex(D, capacity=10)
    vecs = mixture(1000, D, seed=3)
    ix.add(np.arange(7), vecs[:7])
    ix.add(np.arange(7, 1000), vecs[7:])
    assert len(ix) == 1000 and ix._g.index.get_max_elements() >= 1000
    got_ids, _ = ix.search(vecs[::50], k=1)
    assert got_ids[:, 0].tolist() == list(range(0, 1000, 50))


def test_add_and_search_validate_inputs(index):
    with pytest.raises(ValueError):
        index.add(np.array([1, 2]), mixture(3, D))  # count mismatch
    with pytest.raises(ValueError):
        index.add(np.array([1]), mixture(1, D + 1))  # wrong dim
    with pytest.raises(ValueError):
        index.add(np.array([1.5]), mixture(1, D))  # float ids
    with pytest.raises(ValueError):
        index.add(np.array([-1]), mixture(1, D))  # negative id
    with pytest.raises(ValueError):
        index.add(np.array([1]), np.ones((1, D), np.int32))  # integer vectors
    with pytest.raises(ValueError):
        index.add(np.array([1]), 3 * mixture(1, D))  # not normalised
    with pytest.raises(ValueError):
        index.search(mixture(1, D + 1), k=1)
    with pytest.raises(ValueError):
        index.search(mixture(1, D), k=0)
    with pytest.raises(ValueError):
        index.search(np.zeros(D, np.float32), k=1)


def test_save_load_round_trip_gives_identical_results(index, data, tmp_path):
    ids, vecs = data
    index.remove(ids[:100])
    path = tmp_path / "model-a.hnsw"
    index.save(path)
    loaded = VectorIndex.load(path, D)
    assert len(loaded) == len(index) and loaded.deleted_fraction == index.deleted_fraction
    assert np.array_equal(loaded.ids(), index.ids()) and ids[0] not in loaded
    for allowed in (None, ids[::2]):
        a_ids, a_scores = index.search(vecs[:50], k=10, allowed=allowed)
        b_ids, b_scores = loaded.search(vecs[:50], k=10, allowed=allowed)
        assert np.array_equal(a_ids, b_ids) and np.array_equal(a_scores, b_scores)
    loaded.add(ids[:1], vecs[:1])  # still writable, and it grows
    loaded.add(np.arange(5000, 7000), mixture(2000, D, seed=9))
    assert ids[0] in loaded and len(loaded) == len(index) + 2001


def test_save_is_atomic_and_leaves_no_tmp_files(index, tmp_path):
    path = tmp_path / "a.hnsw"
    index.save(path)
    index.save(path)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.hnsw", "a.json"]
    meta = json.loads((tmp_path / "a.json").read_text())
    assert meta["bytes"] == path.stat().st_size and meta["count"] == len(index) and meta["dim"] == D


class _FailingSave:
    """Stands in for the hnswlib index: writes half a file, then the disk 'fills up'."""

    def __init__(self, real: hnswlib.Index) -> None:
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def save_index(self, path: str) -> None:
        Path(path).write_bytes(b"\0" * 1000)
        raise OSError("No space left on device")


def test_crash_while_writing_keeps_the_previous_file_loadable(index, data, tmp_path):
    ids, vecs = data
    path = tmp_path / "a.hnsw"
    index.save(path)
    index.add(np.arange(5000, 5100), mixture(100, D, seed=5))
    real = index._g.index
    index._g.index = _FailingSave(real)
    with pytest.raises(OSError):
        index.save(path)
    index._g.index = real
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.hnsw", "a.json"]
    previous = VectorIndex.load(path, D)
    assert len(previous) == len(ids) and previous.search(vecs[0], k=1)[0][0, 0] == ids[0]


def test_crash_between_index_and_meta_is_detected(index, tmp_path, monkeypatch):
    path = tmp_path / "a.hnsw"
    index.save(path)
    index.add(np.arange(5000, 5100), mixture(100, D, seed=5))

    def boom(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(hnsw.json, "dumps", boom)
    with pytest.raises(OSError):
        index.save(path)
    monkeypatch.undo()
    with pytest.raises(IndexCorruptError, match="rebuilt"):  # new index file, old meta: rebuild, never misread
        VectorIndex.load(path, D)


def _truncate(path: Path, fix_meta: bool) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if fix_meta:
        meta = json.loads(path.with_suffix(".json").read_text())
        path.with_suffix(".json").write_text(json.dumps({**meta, "bytes": path.stat().st_size}))


def _garbage(path: Path) -> None:
    size = path.stat().st_size
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def _garbage_body(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[200:] = b"\xff" * (len(raw) - 200)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: _truncate(p, fix_meta=False),
        lambda p: _truncate(p, fix_meta=True),
        _garbage,
        _garbage_body,
        lambda p: p.unlink(),
        lambda p: p.with_suffix(".json").unlink(),
        lambda p: p.with_suffix(".json").write_text("{not json"),
        lambda p: p.with_suffix(".json").write_text("[1, 2]"),
    ],
    ids=["truncated", "truncated-meta-fixed", "garbage", "garbage-body", "no-index", "no-meta", "bad-json", "not-dict"],
)
def test_damaged_files_raise_index_corrupt(index, tmp_path, damage):
    path = tmp_path / "a.hnsw"
    index.save(path)
    damage(path)
    with pytest.raises(IndexCorruptError, match="rebuilt from the library"):
        VectorIndex.load(path, D)


def test_dimension_or_meta_mismatch_raises_index_corrupt(index, tmp_path):
    path = tmp_path / "a.hnsw"
    index.save(path)
    with pytest.raises(IndexCorruptError, match="32-d"):
        VectorIndex.load(path, 64)  # hnswlib alone would load this silently
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    for bad in ({"dim": 16}, {"format": 99}, {"count": meta["count"] + 1}, {"deleted": [123456]}, {"M": 8}):
        meta_path.write_text(json.dumps({**meta, **bad}))
        with pytest.raises(IndexCorruptError):
            VectorIndex.load(path, bad.get("dim", D))
    meta_path.write_text(json.dumps(meta))
    assert len(VectorIndex.load(path, D)) == len(index)  # the untouched pair still loads


def test_compaction_keeps_results_and_clears_deleted(index, data):
    ids, vecs = data
    index.remove(ids[::2])
    before = index.search(vecs[1::2][:100], k=10)
    assert index.deleted_fraction == pytest.approx(0.5)
    assert not index.maybe_compact(threshold=0.6)
    assert index.maybe_compact(threshold=0.3)
    assert index.deleted_fraction == 0 and len(index) == 500 and np.array_equal(index.ids(), ids[1::2])
    after = index.search(vecs[1::2][:100], k=10)
    assert np.array_equal(before[0][:, 0], after[0][:, 0]) and recall_at_k(after[0], before[0]) >= 0.98
    assert not index.maybe_compact()


def test_compaction_replays_writes_made_while_it_builds(index, data, monkeypatch):
    ids, _ = data
    index.remove(ids[:500])
    extra = mixture(10, D, seed=7)
    real_empty = hnsw._Graph.empty

    def empty_with_concurrent_writes(*args, **kwargs):  # runs while compact() holds no lock
        index.add(np.arange(9000, 9010), extra)
        index.add(ids[600:601], extra[:1])  # an update
        index.remove(ids[700:710])
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(hnsw._Graph, "empty", staticmethod(empty_with_concurrent_writes))
    index.compact()
    assert len(index) == 500 + 10 - 10 and index.deleted_fraction <= 10 / 510  # removals replayed (or never copied)
    assert 9005 in index and ids[705] not in index and ids[600] in index
    np.testing.assert_allclose(index.vectors([ids[600]]), extra[:1], atol=1e-6)
    assert index.search(extra[3], k=1)[0][0, 0] == 9003


def _spy_exact(monkeypatch) -> list[int]:
    calls: list[int] = []

    def spy(matrix, ids, queries, k):
        calls.append(len(ids))
        return exact_search(matrix, ids, queries, k)

    monkeypatch.setattr(hnsw, "exact_search", spy)
    return calls


def test_allowed_small_set_is_searched_exactly(monkeypatch):
    ids, vecs = np.arange(5000), mixture(5000, D, seed=11)
    ix = VectorIndex(D)
    ix.add(ids, vecs)
    ix.remove(ids[:10])
    allowed = np.concatenate([ids[:300], [10**9]])  # includes removed and unknown ids
    calls = _spy_exact(monkeypatch)
    got_ids, got_scores = ix.search(vecs[:20], k=10, allowed=allowed)
    assert calls == [290]  # exact branch, over the live allowed ids only
    ref_ids, ref_scores = exact_search(vecs[10:300], ids[10:300], vecs[:20], 10)
    assert np.array_equal(got_ids, ref_ids) and np.allclose(got_scores, ref_scores, atol=1e-6)
    assert ix.search(vecs[0], k=5, allowed=ids[:10])[0].shape == (1, 0)  # only removed ids allowed


def test_allowed_large_set_uses_the_filtered_graph(monkeypatch):
    ids, vecs = np.arange(5000), mixture(5000, D, seed=12)
    ix = VectorIndex(D)
    ix.add(ids, vecs)
    removed = ids[1::10]
    ix.remove(removed)
    allowed = ids[ids % 3 == 0]  # ~1667 ids, some removed
    calls = _spy_exact(monkeypatch)
    queries = mixture(100, D, seed=13)
    got_ids, _ = ix.search(queries, k=10, allowed=allowed)
    assert calls == []  # graph branch
    live_allowed = np.setdiff1d(allowed, removed)
    assert np.isin(got_ids, live_allowed).all()
    ref_ids, _ = exact_search(vecs[live_allowed], live_allowed, queries, 10)
    assert recall_at_k(got_ids, ref_ids) >= 0.95


def test_recall_at_10_on_clustered_vectors():
    vecs = mixture(20_200, 64, seed=21, clusters=200, spread=0.7)
    base, queries = vecs[:20_000], vecs[20_000:]
    ids = np.arange(20_000) * 3 + 1  # labels are not positions
    ix = VectorIndex(64, threads=2)  # default M / ef_construction / ef_search
    ix.add(ids, base)
    approx, _ = ix.search(queries, k=10)
    exact, _ = exact_search(base, ids, queries, 10)
    assert recall_at_k(approx, exact) >= 0.98
    weak = VectorIndex(64, M=4, ef_construction=20, ef_search=10, threads=2)
    weak.add(ids, base)
    assert recall_at_k(weak.search(queries, k=10, ef=10)[0], exact) < 0.9  # the data set is not trivially easy


def test_concurrent_searches_while_adding_with_resizes():
    base, more = mixture(1000, D, seed=31), mixture(3000, D, seed=32)
    ix = VectorIndex(D, capacity=16)
    ix.add(np.arange(1000), base)
    errors: list[BaseException] = []
    checked = [0]
    done = threading.Event()

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                pick = rng.integers(0, 1000, 8)
                got_ids, got_scores = ix.search(base[pick], k=5, ef=int(rng.choice([64, 96, 128])))
                assert got_ids[:, 0].tolist() == pick.tolist() and (got_scores[:, 0] > 0.999).all()
                assert ((got_ids >= 0) & (got_ids < 4000)).all()
                checked[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    start_cap = ix._g.index.get_max_elements()
    for start in range(0, 3000, 50):
        ix.add(np.arange(1000 + start, 1050 + start), more[start : start + 50])
    time.sleep(0.05)
    done.set()
    for t in threads:
        t.join(timeout=10)
    assert not errors, errors[0]
    assert checked[0] > 20 and ix._g.index.get_max_elements() > start_cap
    assert len(ix) == 4000 and ix.search(more[-1], k=1)[0][0, 0] == 3999


def test_rwlock_modes_share_only_with_the_same_mode():
    lock = RWLock()
    inside: list[str] = []
    overlaps: list[set[str]] = []
    guard = threading.Lock()

    def reader(name: str, mode: int) -> None:
        with lock.read(mode):
            with guard:
                inside.append(name)
                overlaps.append(set(inside))
            time.sleep(0.02)
            with guard:
                inside.remove(name)

    def writer() -> None:
        with lock.write():
            with guard:
                inside.append("w")
                overlaps.append(set(inside))
            time.sleep(0.02)
            with guard:
                inside.remove("w")

    threads = [threading.Thread(target=reader, args=(f"a{i}", 1)) for i in range(3)]
    threads += [threading.Thread(target=reader, args=(f"b{i}", 2)) for i in range(3)]
    threads += [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
    for seen in overlaps:
        assert not ({n for n in seen if n[0] == "a"} and {n for n in seen if n[0] == "b"})  # modes never mix
        assert "w" not in seen or seen == {"w"}  # writers are alone
    assert any(len(seen) > 1 for seen in overlaps)  # same-mode readers do share


def test_exact_search_and_recall_helpers():
    rng = np.random.default_rng(0)
    matrix, queries = unit(rng.normal(size=(300, 8))), unit(rng.normal(size=(5, 8)))
    ids = np.arange(300) + 1000
    got_ids, got_scores = exact_search(matrix, ids, queries, 7)
    full = np.argsort(-(queries @ matrix.T), axis=1)[:, :7]
    assert np.array_equal(got_ids, ids[full]) and got_scores.dtype == np.float32
    assert exact_search(matrix[:3], ids[:3], queries[0], 10)[0].shape == (1, 3)
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 9]])) == pytest.approx(2 / 3)
    assert recall_at_k(got_ids, got_ids) == 1.0
