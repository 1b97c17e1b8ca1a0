"""Why did this match: heatmaps, describe, auto-tags, duplicates to the trash — with real models and files."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosearch.cli import main
from tests.conftest import write_photo, write_tiny_tokenizer


# -- heatmaps --------------------------------------------------------------------------------------------------
def test_crop_box_matches_the_preprocessor():
    from photosearch.explain.heatmap import crop_box
    from photosearch.model.config import PreprocessConfig
    from photosearch.model.preprocess import resize_crop

    cfg = PreprocessConfig(size=64, resize=72)
    im = Image.new("RGB", (300, 120))
    im.paste((255, 0, 0), (0, 0, 150, 120))  # left half red
    box = crop_box(im.size, cfg)
    # shortest side 120 → 72, then 64 of 72 kept: 4 rows cut at the top and bottom (in original pixels ×120/72)
    assert box[1] == pytest.approx(4 * 120 / 72) and box[3] == pytest.approx(68 * 120 / 72)
    assert (box[0] + box[2]) / 2 == pytest.approx(150, abs=3)  # centred
    crop = np.asarray(resize_crop(im, cfg))
    assert crop[:, :28, 0].mean() > 200 and crop[:, 36:, 0].mean() < 50  # the crop shows the red/black edge at its centre


def _tiny_model(tiny_checkpoint):
    from photosearch.model import load_model

    return load_model(tiny_checkpoint, device="cpu", image_backend="torch")


def test_grad_cam_and_occlusion_on_a_tiny_cnn(tiny_checkpoint, tmp_path):
    from photosearch.explain.heatmap import Explainer, ExplainError, render_overlay

    model = _tiny_model(tiny_checkpoint)
    photo = write_photo(tmp_path / "wide.jpg", 3, size=(160, 90))
    q = model.encode_texts(["a red car"])[0]
    ex = Explainer(model)
    hm = ex.explain(str(photo), q)
    assert hm.method == "grad-cam" and hm.values.ndim == 2
    assert 0.0 <= hm.values.min() and hm.values.max() <= 1.0
    assert hm.image_size == (160, 90) and hm.crop_box[0] > 0  # a wide photo: the model saw its centre
    assert hm.score == pytest.approx(float(model.encode_images([str(photo)])[0] @ q), abs=1e-4)
    occ = ex.explain(str(photo), q, method="occlusion")
    assert occ.method == "occlusion" and occ.values.shape == (8, 8)
    assert occ.score == pytest.approx(hm.score, abs=1e-4)
    with pytest.raises(ExplainError, match="ViT"):
        ex.explain(str(photo), q, method="rollout")
    out = render_overlay(Image.open(photo), hm)
    assert out.size == (160, 90)
    a = np.asarray(out, np.float32)
    assert a[:, :10].mean() < np.asarray(Image.open(photo).convert("RGB"), np.float32)[:, :10].mean()  # outside dimmed


def test_photo_query_heatmap_uses_the_visual_space(tiny_checkpoint, tmp_path):
    from photosearch.explain.heatmap import Explainer

    model = _tiny_model(tiny_checkpoint)
    a, b = write_photo(tmp_path / "a.png", 1), write_photo(tmp_path / "b.png", 2)
    emb, vis = model.encode_pixels(np.stack([model.preprocess(str(b))]))
    hm = Explainer(model).explain(str(a), emb[0], vis[0])
    from photosearch.model.vectors import visual_space

    mine = model.encode_images([str(a)], visual=True)
    expect = float(visual_space(mine, model.info.kind)[0] @ visual_space(vis, model.info.kind)[0])  # as search ranks
    assert hm.score == pytest.approx(expect, abs=1e-4)


def test_attention_rollout_on_a_tiny_vit(tmp_path):
    import torch

    from photosearch.explain.heatmap import Explainer
    from photosearch.model import load_model
    from photosearch.model.composed import make_tokenizer, save_checkpoint
    from photosearch.model.config import HeadConfig, PreprocessConfig
    from photosearch.model.towers import DualEncoder
    from training.presets import tiny_config

    torch.manual_seed(0)
    work = tmp_path / "src"
    write_tiny_tokenizer(work / "tokenizer")
    cfg = tiny_config()
    cfg = replace(cfg, image=replace(cfg.image, arch="test_vit", feature_dim=64, num_classes=0),
                  image_head=HeadConfig(type="linear", in_dim=64, out_dim=32),
                  preprocess=PreprocessConfig(size=160, resize=160))
    save_checkpoint(DualEncoder(cfg), tmp_path / "vit", tokenizer=make_tokenizer(cfg.text, work))
    model = load_model(tmp_path / "vit", device="cpu", image_backend="torch")
    photo = write_photo(tmp_path / "p.jpg", 5, size=(200, 160))
    q = model.encode_texts(["a dog on the beach"])[0]
    ex = Explainer(model)
    fused = [blk.attn.fused_attn for blk in model.module.image_tower.backbone.blocks]
    hm = ex.explain(str(photo), q)
    assert hm.method == "grad-rollout" and hm.values.shape == (10, 10)
    plain = ex.explain(str(photo), q, method="rollout")
    other = ex.explain(str(photo), model.encode_texts(["a red car"])[0], method="rollout")
    assert np.allclose(plain.values, other.values)  # plain rollout ignores the query …
    assert np.isfinite(hm.values).all() and hm.values.max() == pytest.approx(1.0)
    # … and the attention blocks are put back as they were (fused kernels stay fast for indexing)
    assert [blk.attn.fused_attn for blk in model.module.image_tower.backbone.blocks] == fused


@pytest.mark.slow
def test_heatmap_mass_lies_on_the_object_named_by_the_query(tmp_path):
    """The shipped model on two Tux Paint stamps side by side: the map follows the query's object."""
    from photosearch.explain.heatmap import Explainer
    from photosearch.model import load_model
    from training.data.fetch import fetch_debian_package
    from training.data.tuxpaint import load_rgb

    stamps = fetch_debian_package("tuxpaint-stamps-default") / "usr/share/tuxpaint/stamps"
    pairs = [("animals/mammals/elephant.png", "vehicles/auto/sedan.png", "an elephant", "a car"),
             ("food/fruit/banana.png", "animals/mammals/pig.png", "a banana", "a pig"),
             ("food/vegetables/broccoli.png", "vehicles/emergency/firetruck.png", "broccoli", "a fire truck")]
    model = load_model("default", device="cpu")
    ex = Explainer(model)  # ONNX-only model: the torch image half is loaded for the heatmap
    for left, right, q_left, q_right in pairs:
        canvas = Image.new("RGB", (448, 448), "white")
        for i, p in enumerate((left, right)):
            im = load_rgb(stamps / p)
            im.thumbnail((216, 216))
            canvas.paste(im, (i * 224 + (224 - im.width) // 2, 224 - im.height // 2))
        path = tmp_path / "pair.png"
        canvas.save(path)
        for q, side in ((q_left, 0), (q_right, 1)):
            hm = ex.explain(str(path), model.encode_texts([q])[0])
            on_left = hm.mass_in((0, 0, 224, 448))
            named = on_left if side == 0 else 1 - on_left
            assert named >= 0.6, f"{q!r}: only {named:.0%} of the heatmap on its object"


# -- describe ------------------------------------------------------------------------------------------------
def test_vocabulary_file_rules_and_vector_cache(tiny_checkpoint, tmp_path, monkeypatch):
    from photosearch.explain import describe

    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PHOTOSEARCH_CONFIG", str(tmp_path / "config"))
    vocab_file = tmp_path / "v.txt"
    vocab_file.write_text("\ufeff# comment\na red car\n\na red car  # dup\na dog\nthe sea\n", encoding="utf-8")
    assert describe.read_phrases(vocab_file) == ["a red car", "a dog", "the sea"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no phrases"):
        describe.read_phrases(tmp_path / "empty.txt")
    model = _tiny_model(tiny_checkpoint)
    v = describe.Vocabulary.for_model(model, path=vocab_file)
    assert v.vectors.shape == (3, model.embed_dim)
    assert len(list((tmp_path / "cache" / "vocabulary").glob("*.npy"))) == 1
    again = describe.Vocabulary.for_model(model, path=vocab_file)
    assert np.array_equal(again.vectors, v.vectors)
    top = v.describe(v.vectors[1], top=2)  # a photo vector equal to a phrase's vector ranks that phrase first
    assert top[0][0] == "a dog" and top[0][1] == pytest.approx(1.0, abs=1e-5) and len(top) == 2
    assert sum(s for _, _, s in v.describe(v.vectors[0], top=3)) == pytest.approx(1.0, abs=1e-5)
    # the user's own copy replaces the shipped one once made
    assert describe.vocabulary_path() == describe.shipped_vocabulary_path()
    mine = describe.ensure_user_vocabulary()
    assert mine.is_file() and describe.vocabulary_path() == mine
    assert len(describe.read_phrases(mine)) > 1000  # the shipped vocabulary: everyday phrases + ImageNet classes


# -- tags ------------------------------------------------------------------------------------------------------
def test_tag_scores_are_calibrated_against_the_vocabulary():
    from photosearch.explain.tags import TagScorer

    rng = np.random.default_rng(0)
    vocab = rng.normal(size=(300, 16)).astype(np.float32)
    vocab /= np.linalg.norm(vocab, axis=1, keepdims=True)
    mu = vocab.mean(0)
    cov = (vocab - mu).T @ (vocab - mu) / len(vocab)
    tag = vocab[7]
    scorer = TagScorer(mu, cov, {"t": tag})
    photos = rng.normal(size=(50, 16)).astype(np.float32)
    z = scorer.scores(photos)[:, 0]
    sims = photos @ vocab.T  # the definition: standard scores against the photo's similarity to every phrase
    expect = (photos @ tag - sims.mean(1)) / sims.std(1)
    assert np.allclose(z, expect, atol=1e-4)


@pytest.fixture
def lib(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    for i in range(8):
        write_photo(photos / f"p{i}.jpg", i)
    base = ["--library", str(tmp_path / "lib"), "--model", str(tiny_checkpoint), "--device", "cpu"]
    assert main(["index", str(photos), *base, "-q"]) == 0
    capsys.readouterr()
    return base, photos


def test_tags_cli_apply_filter_and_incremental(lib, tmp_path, capsys):
    from photosearch.explain.tags import TagError, check_name
    from photosearch.library import Library
    from photosearch.model import load_model
    from photosearch.search import Searcher

    base, photos = lib
    # a threshold low enough that the random model tags some photos, not all
    assert main(["tags", "add", "beach", "--threshold", "-100", *base]) == 0
    assert main(["tags", "add", "Red Car", "--threshold", "100", *base]) == 0
    assert main(["tags", "list", "--json", *base]) == 0
    tags = {t["name"]: t for t in json.loads(capsys.readouterr().out.splitlines()[-1])}
    assert tags["beach"]["photos"] == 8 and tags["red car"]["photos"] == 0
    assert main(["search", "tag:beach", "--json", "--limit", "20", *base]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert len(res) == 8
    assert main(["search", "sunset tag:beach -tag:\"red car\"", "--json", "--limit", "3", *base]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    assert main(["search", "sunset tag:\"red car\"", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == []
    assert main(["search", "tag:nosuch", *base]) == 1
    assert "no tag 'nosuch'" in capsys.readouterr().err
    with pytest.raises(TagError):
        check_name("tag:with:colons")
    # a new photo gets tags when it is indexed; only it is scored
    write_photo(photos / "new.jpg", 42)
    assert main(["index", *base, "-q"]) == 0
    capsys.readouterr()
    with Library(tmp_path / "lib", load_model(base[3], device="cpu")) as library:
        mid = library.model.model_id
        n = library.store.query("SELECT COUNT(*) FROM photo_tags WHERE model_id=? AND tag='beach'", (mid,))[0][0]
        assert n == 9
        from photosearch.explain.tags import apply_tags

        assert apply_tags(library).photos == 0  # nothing left to score
        assert [r.path for r in Searcher(library).search("tag:beach", limit=50)][-1].endswith(".jpg")
    assert main(["tags", "remove", "beach", *base]) == 0
    assert "red car" in capsys.readouterr().out


def test_explain_and_describe_cli(lib, tmp_path, capsys):
    base, photos = lib
    out = tmp_path / "odd name é.png"
    assert main(["explain", str(photos / "p1.jpg"), "a red car", "--out", str(out), "--json", *base]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "grad-cam" and out.is_file() and Image.open(out).size == (96, 64)
    assert main(["explain", str(photos / "p1.jpg"), str(photos / "p2.jpg"), "--out", str(out), *base]) == 0
    assert "score" in capsys.readouterr().out
    assert main(["explain", str(tmp_path / "missing.jpg"), "x", *base]) == 1
    vocab = tmp_path / "v.txt"
    vocab.write_text("a red car\na dog\nthe sea\na tree\n")
    assert main(["describe", str(photos / "p1.jpg"), "--vocabulary", str(vocab), "--top", "3", "--json", *base]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["phrases"][0]["phrase"] in {"a red car", "a dog", "the sea", "a tree"}
    assert len(d["phrases"]) == 3 and d["phrases"][0]["score"] >= d["phrases"][1]["score"]
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert main(["describe", str(tmp_path / "bad.jpg"), "--vocabulary", str(vocab), *base]) == 1
    assert "bad.jpg" in capsys.readouterr().err


# -- duplicates to the trash ---------------------------------------------------------------------------------
def test_duplicates_trash_and_undo(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    photos = tmp_path / "photos"
    src = write_photo(photos / "orig.jpg", 7, size=(200, 150))
    Image.open(src).resize((100, 75)).save(photos / "small copy.jpg")
    Image.open(src).save(photos / "same.png")
    write_photo(photos / "other.jpg", 99)
    base = ["--library", str(tmp_path / "lib"), "--model", str(tiny_checkpoint), "--device", "cpu"]
    assert main(["index", str(photos), *base, "-q"]) == 0
    capsys.readouterr()
    assert main(["duplicates", "--trash", *base]) == 0
    plan = capsys.readouterr().out
    assert "would move 2 photos" in plan and "keep  " in plan
    assert (photos / "small copy.jpg").exists()  # a plan moves nothing
    assert main(["duplicates", "--trash", "--keep", "largest", "--yes", *base]) == 0
    assert "moved 2 photos to the trash" in capsys.readouterr().out
    left = sorted(p.name for p in photos.iterdir())
    assert "small copy.jpg" not in left and "other.jpg" in left and len(left) == 2
    trash = tmp_path / "xdg" / "Trash"
    assert len(list((trash / "files").iterdir())) == 2
    info = (trash / "info" / "small copy.jpg.trashinfo").read_text()
    assert "Path=" + str(photos / "small%20copy.jpg") in info and "DeletionDate=" in info
    assert main(["status", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["photos"] == 2  # forgotten by the library
    assert main(["undo-trash", *base]) == 0
    assert "restored 2 photos" in capsys.readouterr().out
    assert (photos / "small copy.jpg").exists() and not list((trash / "info").iterdir())
    assert main(["status", "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out)["indexed"] == 4
    assert main(["undo-trash", *base]) == 0  # nothing left to undo
    assert "nothing" in capsys.readouterr().out


def test_trash_keeps_a_file_that_cannot_move(tmp_path, monkeypatch):
    from photosearch.library.trash import journal, move_to_trash

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    a = tmp_path / "a.jpg"
    a.write_bytes(b"x")
    (tmp_path / "xdg" / "Trash" / "info").mkdir(parents=True)
    (tmp_path / "xdg" / "Trash" / "info" / "a.jpg.trashinfo").write_text("taken")  # name clash → a.1.jpg
    moved, problems = move_to_trash([a, tmp_path / "gone.jpg"], tmp_path)
    assert len(moved) == 1 and moved[0].trashed.endswith("a.1.jpg") and not a.exists()
    assert problems and "not there" in problems[0]
    assert [t.original for t in journal(tmp_path)] == [str(a)]
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        (ro / "b.jpg").write_bytes(b"y")
        ro.chmod(0o500)
        try:
            moved, problems = move_to_trash([ro / "b.jpg"], tmp_path)
            assert not moved and problems and (ro / "b.jpg").exists()
        finally:
            ro.chmod(0o700)


def test_keeper_rules():
    from photosearch.search.engine import Result, keeper

    g = [Result("/b.jpg", 1, 1, taken_at=10, width=100, height=100, size=5),
         Result("/a.jpg", 1, 2, taken_at=30, width=400, height=300, size=9),
         Result("/c.jpg", 1, 3, taken_at=20, width=400, height=300, size=7)]
    assert keeper(g, "largest").path == "/a.jpg"
    assert keeper(g, "newest").path == "/a.jpg" and keeper(g, "oldest").path == "/b.jpg"
    assert keeper(g, "first").path == "/a.jpg"


def test_path_of_shipped_vocabulary_exists():
    from photosearch.explain.describe import shipped_vocabulary_path

    assert shipped_vocabulary_path().is_file()
    assert Path(shipped_vocabulary_path()).read_text(encoding="utf-8").count("\n") > 1000


def test_tiny_model_texts_are_distinct(tiny_checkpoint):
    """Guards the test fixture itself: the tiny tokenizer knows its words (not every word [UNK])."""
    model = _tiny_model(tiny_checkpoint)
    a, b = model.encode_texts(["a red car", "the sea"])
    assert float(a @ b) < 0.999
