"""The library engine on real folders, real SQLite and real hnswlib with a tiny random-weight model."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosearch.library import Control, Library
from photosearch.model import load_model
from photosearch.model.vectors import visual_space
from photosearch.search import Filters, QueryError, Searcher, near_duplicate_groups, parse_query
from tests.conftest import build_tiny_checkpoint, write_photo


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint, device="cpu", image_backend="torch")


def tree(root: Path) -> Path:
    """A photo folder with every supported type, odd names, and things that must be skipped."""
    write_photo(root / "a.jpg", 1)
    write_photo(root / "B.JPEG", 2, fmt="JPEG")
    write_photo(root / "sub" / "c.png", 3)
    write_photo(root / "sub" / "deeper" / "d.webp", 4, fmt="WEBP")
    write_photo(root / "e.bmp", 5)
    write_photo(root / "f.gif", 6)
    write_photo(root / "g.TIFF", 7, fmt="TIFF")
    write_photo(root / "h.heic", 13, fmt="HEIF")
    write_photo(root / "i.avif", 14, fmt="AVIF")
    write_photo(root / "<b>odd name<img src=x> ü.jpg", 8)
    write_photo(root / ".hidden.jpg", 9)
    write_photo(root / "._a.jpg", 10, fmt="JPEG")
    write_photo(root / "@eaDir" / "thumb.jpg", 11)
    write_photo(root / ".git" / "x.png", 12)
    (root / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / "notes.txt").write_text("not a photo")
    return root


def snapshot(root: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_index_scan_rules_and_nothing_written_in_photo_folders(tmp_path, model):
    photos = tree(tmp_path / "photos")
    before = snapshot(photos)
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        report = lib.index()
        assert report.indexed == 10 and not report.failed
        paths = {p.path for p in lib.store.iter_photos()}
        assert {os.path.basename(p) for p in paths} == {
            "a.jpg", "B.JPEG", "c.png", "d.webp", "e.bmp", "f.gif", "g.TIFF", "h.heic", "i.avif",
            "<b>odd name<img src=x> ü.jpg"}
        st = lib.status(model.model_id)
        assert (st["photos"], st["indexed"], st["failed"]) == (10, 10, 0)
    assert snapshot(photos) == before


def test_bad_files_are_recorded_and_skipped(tmp_path, model):
    photos = tmp_path / "photos"
    write_photo(photos / "good.jpg", 1)
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.png").write_text("definitely not a png")
    good = write_photo(tmp_path / "big.jpg", 2, size=(400, 300)).read_bytes()
    (photos / "truncated.jpg").write_bytes(good[:700])
    os.symlink(tmp_path / "nowhere.jpg", photos / "dangling.jpg")
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        report = lib.index()
        assert report.indexed == 1
        reasons = dict(report.failed)
        assert set(map(os.path.basename, reasons)) == {"empty.jpg", "text.png", "truncated.jpg"}
        assert "empty" in reasons[str(photos / "empty.jpg")]
        assert "not an image" in reasons[str(photos / "text.png")]
        assert lib.status(model.model_id)["failed"] == 3
        # failures are not retried until the file changes; fixing the file gets it indexed
        assert lib.index().indexed == 0
        write_photo(photos / "text.png", 3)
        os.utime(photos / "text.png", ns=(time.time_ns(), time.time_ns() + 10**9))
        assert lib.index().indexed == 1
        assert lib.status(model.model_id)["failed"] == 2


def test_incremental_rename_copy_change_delete(tmp_path, model):
    photos = tmp_path / "photos"
    for i in range(6):
        write_photo(photos / f"p{i}.jpg", i)
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        assert lib.index().indexed == 6
        r = lib.index()
        assert (r.indexed, r.unchanged) == (0, 6)
        old_id = lib.store.photo_by_path(str(photos / "p0.jpg")).id
        (photos / "moved").mkdir()
        shutil.move(photos / "p0.jpg", photos / "moved" / "renamed.jpg")
        shutil.copy(photos / "p1.jpg", photos / "copy-of-p1.jpg")
        write_photo(photos / "p2.jpg", 99)  # same name, new content
        (photos / "p3.jpg").unlink()
        r = lib.index()
        assert (r.moved, r.copied, r.indexed, r.removed) == (1, 1, 1, 1)
        assert lib.store.photo_by_path(str(photos / "moved" / "renamed.jpg")).id == old_id
        assert lib.store.photo_by_path(str(photos / "p3.jpg")) is None
        s = Searcher(lib)
        hits = [r.path for r in s.search("a photo", limit=50)]
        assert str(photos / "p3.jpg") not in hits and str(photos / "moved" / "renamed.jpg") in hits
        assert len(hits) == 6
        assert len(lib.index_for().index) == 6


def test_search_text_photo_combined_filters(tmp_path, model):
    photos = tmp_path / "photos"
    paths = [write_photo(photos / ("x" if i % 2 else "y") / f"p{i}.jpg", i) for i in range(10)]
    dated = photos / "y" / "dated.jpg"
    im = Image.open(paths[0])
    exif = im.getexif()
    exif.get_ifd(0x8769)[0x9003] = "2019:07:04 12:00:00"
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"
    im.save(dated, exif=exif)
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        lib.index()
        s = Searcher(lib)
        res = s.search("a red car", limit=5)
        assert len(res) == 5 and all(a.score >= b.score for a, b in zip(res, res[1:]))
        assert all(-1.0001 <= r.score <= 1.0001 for r in res)
        # a photo query finds the photo itself first with cosine ≈ 1
        res = s.similar(str(paths[3]), limit=3)
        assert res[0].path == str(paths[3]) and res[0].score > 0.999
        res = s.similar(paths[4].read_bytes(), limit=1)
        assert res[0].path == str(paths[4])
        # its scores are cosines of the power-normalised visual vectors (visual_space), best first
        res = s.similar(str(paths[6]), limit=4)
        _, qvis = model.encode_pixels(model.preprocess(paths[6])[None])
        ids, vis = lib.store.embeddings(model.model_id, [r.photo_id for r in res], visual=True)
        want = dict(zip(ids.tolist(), (visual_space(vis, model.info.kind) @ visual_space(qvis, model.info.kind)[0]).tolist()))
        assert [r.score for r in res] == pytest.approx([want[r.photo_id] for r in res], abs=2e-3)
        # combined and weighted queries change the ranking but stay valid
        combo = s.search(f"2:sunset + {paths[5]} - cat", limit=3)
        assert len(combo) == 3
        only_x = s.search("photo", limit=20, filters=Filters(folder=str(photos / "x")))
        assert only_x and all("/x/" in r.path for r in only_x)
        d = s.search("photo", limit=20, filters=Filters(date_from=1546300800, date_to=1577836800))
        assert [r.path for r in d] == [str(dated)]
        assert d[0].camera == "Canon EOS 5D" and d[0].taken_at is not None
        assert s.search("photo", limit=5, filters=Filters(min_score=2.0)) == []
        by_date = s.search("photo", limit=20, sort="date")
        assert by_date[0].path == str(dated)


def test_parse_query():
    t = parse_query('2:sunset + "beach" - people')
    assert [(x.kind, x.value, x.weight) for x in t] == [
        ("text", "sunset", 2.0), ("text", "beach", 1.0), ("text", "people", -1.0)]
    assert parse_query("t-shirt with a-line")[0].value == "t-shirt with a-line"
    with pytest.raises(QueryError):
        parse_query("   ")
    with pytest.raises(QueryError, match="no such file"):
        parse_query("./missing-photo.jpg")
    assert [x.weight for x in parse_query("x - y")] == [1.0, -1.0]
    with pytest.raises(QueryError, match="positive"):
        parse_query("-1:x")


def test_symlink_loop_and_vanished_folder(tmp_path, model):
    photos = tmp_path / "photos"
    write_photo(photos / "a.jpg", 1)
    os.symlink(photos, photos / "loop")
    drive = tmp_path / "drive"
    write_photo(drive / "b.jpg", 2)
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        lib.add_folder(drive)
        assert lib.index().indexed == 2
        shutil.move(drive, tmp_path / "unplugged")
        r = lib.index()
        assert r.offline == [str(drive)] and r.removed == 0
        assert lib.status(model.model_id)["indexed"] == 2  # an offline folder keeps its photos


def test_cancel_and_resume(tmp_path, model):
    photos = tmp_path / "photos"
    for i in range(40):
        write_photo(photos / f"p{i:02d}.png", i, size=(40, 30))
    control = Control()
    seen = []

    def progress(p):
        seen.append(p)
        if p.phase == "indexing" and p.done >= 8:
            control.cancel()

    with Library(tmp_path / "lib", model, batch_size=8) as lib:
        lib.add_folder(photos)
        r = lib.index(progress=progress, control=control)
        assert r.cancelled and r.indexed == 8
        assert any(p.total == 40 and p.rate > 0 for p in seen)
    with Library(tmp_path / "lib", model, batch_size=8) as lib:
        r = lib.index()
        assert not r.cancelled and r.indexed == 32 and r.unchanged == 8


def test_index_file_loss_is_repaired_from_store(tmp_path, model):
    photos = tmp_path / "photos"
    for i in range(5):
        write_photo(photos / f"p{i}.jpg", i)
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        lib.index()
        index_file = lib.index_for().path
    index_file.write_bytes(b"garbage")
    with Library(tmp_path / "lib", model) as lib:
        assert len(lib.index_for().index) == 5
        assert Searcher(lib).similar(str(photos / "p2.jpg"), limit=1)[0].path == str(photos / "p2.jpg")


def test_switching_models_keeps_each_index(tmp_path, model):
    photos = tmp_path / "photos"
    for i in range(4):
        write_photo(photos / f"p{i}.jpg", i)
    other = load_model(build_tiny_checkpoint(tmp_path / "other", seed=5), device="cpu", image_backend="torch")
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        lib.index()
    with Library(tmp_path / "lib", other) as lib:
        assert lib.index().indexed == 4  # the new model encodes everything …
    with Library(tmp_path / "lib", model) as lib:
        r = lib.index()
        assert r.indexed == 0 and len(lib.index_for().index) == 4  # … and the first model's work is intact
        assert len(list((tmp_path / "lib" / "indexes").glob("*.hnsw"))) == 2


def test_near_duplicates(tmp_path, model):
    photos = tmp_path / "photos"
    base = write_photo(photos / "orig.jpg", 1, size=(200, 150))
    Image.open(base).resize((100, 75)).save(photos / "small.jpg", quality=70)
    for i in range(2, 8):
        write_photo(photos / f"other{i}.jpg", i * 13, size=(200, 150))
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        lib.index()
        groups = near_duplicate_groups(lib, threshold=0.95)
        names = [sorted(os.path.basename(r.path) for r in g) for g in groups]
        assert ["orig.jpg", "small.jpg"] in names


def test_forget(tmp_path, model):
    photos = tmp_path / "photos"
    for i in range(3):
        write_photo(photos / "keep" / f"p{i}.jpg", i)
        write_photo(photos / "drop" / f"q{i}.jpg", 10 + i)
    with Library(tmp_path / "lib", model) as lib:
        lib.add_folder(photos)
        lib.index()
        assert lib.forget(photos / "drop") == 3
        assert lib.forget(photos / "keep" / "p0.jpg") == 1
        assert len(lib.index_for().index) == 2
        assert np.array_equal(lib.index_for().index.ids(), lib.store.vector_ids(model.model_id))
