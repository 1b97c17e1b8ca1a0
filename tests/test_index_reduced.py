"""Reduced indexes (photosearch.index.reduce): narrower graph vectors, exact re-ranking from full vectors, and
the library switching to them as it grows. Real hnswlib, real SQLite."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from photosearch.index import IndexCorruptError, VectorIndex, exact_search, recall_at_k
from photosearch.index.reduce import fit_projection, kept_energy
from photosearch.library.library import ModelIndex
from photosearch.library.store import Store

D = 160


def anisotropic(n: int, seed: int = 0, dim: int = D, clusters: int = 40) -> np.ndarray:
    """Unit vectors whose energy falls off across directions, as real image embeddings' does (a few dozen
    directions hold almost all of it), in clusters."""
    rng = np.random.default_rng(seed)
    scale = np.exp(-np.arange(dim) / 6.0)
    basis = np.linalg.qr(np.random.default_rng(99).normal(size=(dim, dim)))[0]  # same directions for every seed
    centres = rng.normal(size=(clusters, dim)) * scale
    x = (centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim)) * scale) @ basis.T
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return np.arange(1, 3001, dtype=np.int64), anisotropic(3000)


def reduced_index(ids: np.ndarray, vecs: np.ndarray) -> VectorIndex:
    ix = VectorIndex(D, projection=fit_projection(vecs[:1000]))
    ix.add(ids, vecs)
    return ix


def test_fit_projection_keeps_the_energy_of_anisotropic_vectors_only(data):
    _, vecs = data
    p = fit_projection(vecs[:1000])
    assert p is not None and p.shape[0] == D and p.shape[1] % 32 == 0 and p.shape[1] <= D // 2
    assert np.allclose(p.T @ p, np.eye(p.shape[1]), atol=1e-5)
    assert kept_energy(p, vecs[1000:]) >= 0.96  # held-out vectors too
    iso = np.random.default_rng(1).normal(size=(2000, D))
    assert fit_projection(iso / np.linalg.norm(iso, axis=1, keepdims=True)) is None  # nothing to gain
    assert fit_projection(vecs[:200]) is None  # too few samples to estimate 160 directions


def test_reduced_index_gives_cosines_and_exact_search_results(data):
    ids, vecs = data
    ix = reduced_index(ids, vecs)
    assert ix.reduced and ix.graph_dim < D and "graph_dim" in repr(ix)
    queries = anisotropic(60, seed=7)
    got_ids, got_scores = ix.search(queries, k=10)
    want_ids, want_scores = exact_search(vecs, ids, queries, 10)
    assert recall_at_k(got_ids, want_ids) >= 0.98
    # scores are the cosines of the full vectors (int8 codes: to ~1e-3), best first
    rows = {int(i): n for n, i in enumerate(ids)}
    true = np.einsum("qkd,qd->qk", vecs[[[rows[int(i)] for i in r] for r in got_ids]], queries)
    assert np.allclose(got_scores, true, atol=2e-3) and (np.diff(got_scores, axis=1) <= 1e-7).all()
    # filters: a small allowed set is searched exactly over the codes, a large one through the graph
    small = ids[::100]
    s_ids, s_scores = ix.search(queries[0], k=5, allowed=small)
    assert np.array_equal(s_ids, exact_search(vecs[::100], small, queries[:1], 5)[0])
    big = ids[ids % 2 == 0]
    b_ids, _ = ix.search(queries, k=10, allowed=big)
    assert np.isin(b_ids, big).all()
    assert recall_at_k(b_ids, exact_search(vecs[1::2], big, queries, 10)[0]) >= 0.95
    assert np.allclose(ix.vectors(ids[:5]), vecs[:5], atol=1e-2)  # full vectors (from the codes), not the graph's
    # without re-ranking: graph ids and the graph's approximate scores
    a_ids, _ = ix.search(queries, k=10, rerank=False)
    assert recall_at_k(a_ids, want_ids) >= 0.8


def test_replaced_and_restored_vectors_update_their_codes(data):
    ids, vecs = data
    ix = reduced_index(ids, vecs)
    ix.remove(ids[:20])
    ix.add(ids[10:20], vecs[2000:2010])  # deleted ids come back with other vectors
    ix.add(ids[30:40], vecs[2010:2020])  # live ids get new vectors
    assert np.allclose(ix.vectors(ids[10:20]), vecs[2000:2010], atol=1e-2)
    assert np.allclose(ix.vectors(ids[30:40]), vecs[2010:2020], atol=1e-2)
    got, scores = ix.search(vecs[2015], k=2)
    assert ids[35] in got[0] and scores[0, 0] > 0.99
    assert ids[5] not in ix.search(vecs[5], k=5)[0][0]


def test_reduced_index_saves_its_projection_and_detects_damage(data, tmp_path):
    ids, vecs = data
    ix = reduced_index(ids, vecs)
    ix.remove(ids[:10])
    path = tmp_path / "m.hnsw"
    ix.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.codes.npz", "m.hnsw", "m.json", "m.proj.npy"]
    loaded = VectorIndex.load(path, D)
    assert loaded.reduced and np.array_equal(loaded.projection, ix.projection) and len(loaded) == len(ix)
    q = anisotropic(20, seed=3)
    a, b = loaded.search(q, k=10), ix.search(q, k=10)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    loaded.add(ids[:10], vecs[:10])  # the loaded codes keep working for writes
    assert loaded.search(vecs[3], k=1)[0][0, 0] == ids[3]
    for name, match in (("proj.npy", "projection"), ("codes.npz", "codes")):
        damaged = path.with_suffix("." + name)
        good = damaged.read_bytes()
        damaged.write_bytes(good[: len(good) // 2] + b"\0" * (len(good) - len(good) // 2))
        with pytest.raises(IndexCorruptError, match=match):
            VectorIndex.load(path, D)
        damaged.unlink()
        with pytest.raises(IndexCorruptError, match=match):
            VectorIndex.load(path, D)
        damaged.write_bytes(good)
    assert len(VectorIndex.load(path, D)) == len(ix)


def test_compaction_into_a_projection_replays_writes_made_meanwhile(data):
    ids, vecs = data
    ix = VectorIndex(D)
    ix.add(ids[:2500], vecs[:2500])
    new_ids, new_vecs = ids[2500:], vecs[2500:]
    started = threading.Event()
    real_upsert = type(ix._g).upsert

    def slow_upsert(g, *a, **kw):  # hold the rebuild open so the writes below land during it
        started.set()
        threading.Event().wait(0.05)
        return real_upsert(g, *a, **kw)

    type(ix._g).upsert = slow_upsert
    try:
        t = threading.Thread(target=ix.compact, kwargs={"projection": fit_projection(vecs[:1000])})
        t.start()
        started.wait(5)
        ix.add(new_ids, new_vecs)
        ix.remove(ids[:100])
        t.join(30)
    finally:
        type(ix._g).upsert = real_upsert
    assert ix.reduced and ix.deleted_fraction < 0.05  # removed during the rebuild: marked deleted in the new graph
    assert np.array_equal(ix.ids(), ids[100:])
    got, scores = ix.search(new_vecs[:20], k=1)
    assert np.array_equal(got[:, 0], new_ids[:20]) and np.allclose(scores[:, 0], 1, atol=2e-3)
    with pytest.raises(ValueError, match="already reduced"):
        ix.compact(projection=ix.projection)


def fill_store(store: Store, model_id: str, vecs: np.ndarray, start: int = 0) -> np.ndarray:
    folder = store.add_folder("/photos")
    ids = []
    with store.transaction() as db:
        for n, v in enumerate(vecs, start):
            pid = store.upsert_photo(db, f"/photos/{n:05d}.jpg", folder.id, 1000, 1, f"{n:032x}", {}, None)
            store.put_vectors(db, model_id, pid, v, None)
            ids.append(pid)
    return np.array(ids, np.int64)


def test_library_index_switches_to_reduced_past_the_threshold_and_stays_consistent(tmp_path, data, monkeypatch):
    _, vecs = data
    monkeypatch.setattr(ModelIndex, "REDUCE_AT", 1500)
    store = Store(tmp_path / "lib")
    store.register_model("m", "test", "/nowhere", D, 0)
    ids = fill_store(store, "m", vecs[:1000])
    mi = ModelIndex(store, "m", D)
    assert not mi.index.reduced and len(mi.index) == 1000
    more = fill_store(store, "m", vecs[1000:2000], start=1000)
    mi.add(more, vecs[1000:2000])
    mi.save()  # past REDUCE_AT: rebuilt reduced, then saved with its projection
    assert mi.index.reduced and len(mi.index) == 2000
    q = anisotropic(30, seed=11)
    all_ids = np.concatenate([ids, more])
    want = exact_search(vecs[:2000], all_ids, q, 10)[0]
    assert recall_at_k(mi.index.search(q, k=10)[0], want) >= 0.98
    # reopened: loads reduced from disk; with the file lost, rebuilt reduced straight from the store
    again = ModelIndex(store, "m", D)
    assert again.index.reduced and np.array_equal(again.index.ids(), all_ids)
    mi.path.unlink()
    rebuilt = ModelIndex(store, "m", D)
    assert rebuilt.index.reduced and np.array_equal(rebuilt.index.ids(), all_ids)
    assert recall_at_k(rebuilt.index.search(q, k=10)[0], want) >= 0.98
    store.close()


def test_library_of_isotropic_vectors_is_not_reduced(tmp_path, monkeypatch):
    monkeypatch.setattr(ModelIndex, "REDUCE_AT", 300)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, D))
    vecs = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    store = Store(tmp_path / "lib")
    store.register_model("m", "test", "/nowhere", D, 0)
    fill_store(store, "m", vecs)
    mi = ModelIndex(store, "m", D)
    mi.save()
    assert not mi.index.reduced and not mi.maybe_reduce() and len(mi.index) == 400
    store.close()


def test_visual_space_power_normalises_composed_models_only():
    from photosearch.model.vectors import l2_normalize, visual_space

    v = np.array([[4.0, 1.0, 0.0, -9.0]], np.float32)
    np.testing.assert_allclose(visual_space(v, "dual_encoder"), l2_normalize(np.array([[2.0, 1.0, 0.0, -3.0]])))
    np.testing.assert_allclose(visual_space(v, "hf_clip"), l2_normalize(v))  # HF: scores stay transformers' cosines


def test_big_indexes_are_saved_less_often(tmp_path, monkeypatch):
    from photosearch.library import library

    store = Store(tmp_path / "lib")
    store.register_model("m", "test", "/nowhere", D, 0)
    fill_store(store, "m", anisotropic(300))
    mi = ModelIndex(store, "m", D)
    assert mi.save_interval == library.SAVE_EVERY_S  # small: the base interval
    monkeypatch.setattr(library, "SAVE_EVERY_PHOTOS", 100)
    assert mi.save_interval == pytest.approx(3 * library.SAVE_EVERY_S)  # 300 photos, one interval per 100
    mi.dirty, mi.last_save = True, 0.0
    mi.save_if_due()  # long overdue: saved
    assert not mi.dirty and mi.path.is_file()
    store.close()
