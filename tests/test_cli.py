"""The headless command line, run in-process like a user's shell would (real library in tmp_path)."""

from __future__ import annotations

import json

import pytest

from photosearch.cli import main
from tests.conftest import write_photo


@pytest.fixture
def lib(tmp_path, tiny_checkpoint, capsys):
    photos = tmp_path / "photos"
    for i in range(6):
        write_photo(photos / f"p{i}.jpg", i)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    base = ["--library", str(tmp_path / "lib"), "--model", str(tiny_checkpoint), "--device", "cpu"]
    assert main(["index", str(photos), *base, "-q"]) == 0
    out = capsys.readouterr().out
    assert "indexed 6" in out and "skipped 1" in out and "broken.jpg" in out
    return base, photos


def test_search_json_contract_and_order(lib, tmp_path, capsys):
    base, photos = lib
    qfile = tmp_path / "queries.txt"
    qfile.write_text("second query\n\nthird query\n")
    assert main(["search", "first query", "--from-file", str(qfile), "--json", "--limit", "3", *base]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"] for x in lines] == ["first query", "second query", "third query"]
    for x in lines:
        assert len(x["results"]) == 3
        scores = [r["score"] for r in x["results"]]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
        assert all(r["path"].startswith(str(photos)) for r in x["results"])


def test_similar_status_duplicates_forget(lib, capsys):
    base, photos = lib
    assert main(["similar", str(photos / "p2.jpg"), "--json", "--limit", "1", *base]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["results"][0]["path"] == str(photos / "p2.jpg") and res["results"][0]["score"] > 0.999
    assert main(["status", "--json", *base]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["photos"], st["indexed"], st["failed"]) == (7, 6, 1)
    assert st["failures"][0]["path"].endswith("broken.jpg") and st["failures"][0]["reason"]
    assert main(["duplicates", "--json", *base]) == 0
    capsys.readouterr()
    assert main(["forget", str(photos / "p0.jpg"), *base]) == 0
    assert main(["status", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["indexed"] == 5


def test_clear_errors(tmp_path, tiny_checkpoint, capsys):
    base = ["--library", str(tmp_path / "lib"), "--model", str(tiny_checkpoint)]
    assert main(["similar", str(tmp_path / "nope.jpg"), *base]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["search", "x", "--library", str(tmp_path / "l2"), "--model", str(tmp_path / "no-model")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "missing"), *base]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_self_test_passes_with_a_tiny_model(tiny_checkpoint, capsys):
    assert main(["--self-test", "--model", str(tiny_checkpoint)]) == 0
    assert "self-test: PASS" in capsys.readouterr().out


def test_self_test_reports_failure(tmp_path, capsys):
    assert main(["--self-test", "--model", str(tmp_path / "not-a-model")]) == 1
    assert "self-test: FAIL" in capsys.readouterr().out
