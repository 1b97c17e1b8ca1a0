"""Tests for training.data.captions: small fixtures of every annotation format, real image files in tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.captions import (
    FORMATS,
    CaptionData,
    CaptionedPhoto,
    DatasetError,
    TrainPairs,
    detect_format,
    eval_lists,
    load_caption_data,
    load_class_folder,
    main_check,
    readable_class_name,
)
from training.evaluate import caption_recall, recall_at_k, zero_shot_accuracy

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def img(path: Path, colour: tuple[int, int, int] = (120, 60, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)
    return path


def write(path: Path, text: str, bom: bool = False, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def caps_by_name(data: CaptionData) -> dict[str, tuple[str, ...]]:
    return {it.image.name: it.captions for it in data.items}


# --- fixtures of each format --------------------------------------------------------------------------------------


def make_coco(root: Path, n_present: int = 3, n_absent: int = 0) -> Path:
    names = [f"{i:012d}.jpg" for i in range(n_present + n_absent)]
    for i, n in enumerate(names[:n_present]):
        img(root / "val2017" / n, COLOURS[i % len(COLOURS)])
    images = [{"id": 100 + i, "file_name": n, "width": 8, "height": 6} for i, n in enumerate(names)]
    images.append({"id": 999, "file_name": "uncaptioned.jpg"})
    anns = []
    for i in range(len(names)):
        anns.append({"id": len(anns), "image_id": 100 + i, "caption": f"photo number {i} "})
        anns.append({"id": len(anns), "image_id": 100 + i, "caption": f"a  second\ncaption for {i}"})
    anns.append({"id": len(anns), "image_id": 100, "caption": "photo number 0"})  # duplicate after cleaning
    anns.append({"id": len(anns), "image_id": 100, "caption": "   "})  # empty
    return write(root / "annotations" / "captions_val2017.json", json.dumps({"info": {}, "images": images,
                                                                           "annotations": anns}))


def make_flickr8k(root: Path) -> Path:
    lines = []
    for i in range(4):
        img(root / "Flicker8k_Dataset" / f"{1000 + i}_ab.jpg", COLOURS[i])
        lines += [f"{1000 + i}_ab.jpg#{k}\tcaption {k} of image {i} ." for k in range(5)]
    write(root / "Flickr_8k.testImages.txt", "1001_ab.jpg\n1003_ab.jpg\n", crlf=True)
    write(root / "Flickr_8k.trainImages.txt", "1000_ab.jpg\n1002_ab.jpg\n")
    return write(root / "Flickr8k.token.txt", "\n".join(lines) + "\n", bom=True, crlf=True)


def make_flickr30k(root: Path) -> Path:
    folder = root / "flickr30k_images"
    rows = ["image_name| comment_number| comment"]
    for i in range(3):
        img(folder / "flickr30k_images" / f"{500 + i}.jpg", COLOURS[i])
        rows += [f"{500 + i}.jpg| {k}| Image {i} says {k} ." for k in range(5)]
    rows[-1] = "502.jpg| 4 A dog runs across the grass ."  # the one known row without its second '|'
    return write(folder / "results.csv", "\n".join(rows) + "\n")


def make_karpathy(root: Path) -> Path:
    images = []
    splits = ["train", "val", "test", "restval", "test", "train"]
    for i, sp in enumerate(splits):
        sub = "train2014" if sp in ("train", "restval") else "val2014"
        name = f"COCO_{sub}_{i:012d}.jpg"
        img(root / sub / name, COLOURS[i])
        images.append({"filepath": sub, "filename": name, "imgid": i, "split": sp, "cocoid": i,
                       "sentences": [{"raw": f"Sentence {k} of {i}.", "tokens": ["sentence", str(k)]}
                                     for k in range(3)] + [{"tokens": ["only", "tokens", str(i)]}]})
    return write(root / "dataset_coco.json", json.dumps({"images": images, "dataset": "coco"}))


def make_csv(root: Path) -> Path:
    for i in range(3):
        img(root / "imgs" / f"p{i}.png", COLOURS[i])
    text = ("image,caption,source\n"
            "imgs/p0.png,\"a red square, small\",x\n"
            "imgs/p1.png,a green square,x\n"
            "imgs/p0.png,another caption of p0,y\n"
            "imgs/p0.png,\"a red square, small\",z\n"
            "\n"
            "imgs/p2.png,a blue square,x\n")
    return write(root / "pairs.csv", text, crlf=True)


def make_jsonl(root: Path) -> Path:
    for i in range(3):
        img(root / "pics" / f"{i}.jpg", COLOURS[i])
    recs = [{"image": "pics/0.jpg", "caption": "zero"}, {"image": "pics/1.jpg", "captions": ["one", "uno", "one"]},
            {"image": "pics/2.jpg", "caption": "two"}, {"image": "pics/0.jpg", "caption": "nought"}]
    return write(root / "pairs.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n\n")


def make_sidecar(root: Path) -> Path:
    folder = root / "captioned"
    for i in range(3):
        img(folder / "sub" / f"s{i}.jpg", COLOURS[i])
        write(folder / "sub" / f"s{i}.txt", f"first caption {i}\n\nsecond caption {i}\n", crlf=i == 1)
    img(folder / "no_caption.jpg")
    write(folder / "orphan.txt", "caption of nothing")
    return folder


def make_tuxpaint(root: Path) -> Path:
    stamps = root / "usr/share/tuxpaint/stamps"
    img(stamps / "animals" / "cat.png")
    write(stamps / "animals" / "cat.txt", "A cat.\nfr.utf8=Un chat.\n")
    img(stamps / "food" / "apple.png", (200, 0, 0))
    write(stamps / "food" / "apple.txt", "An apple.\n")
    img(stamps / "food" / "uncaptioned.png")
    return root


# --- each format --------------------------------------------------------------------------------------------------


def test_coco_default_folder_counts_dedupes_and_notes(tmp_path: Path) -> None:
    ann = make_coco(tmp_path)
    data = load_caption_data("coco", ann)  # images found in ../val2017 without being told
    assert data.name == "coco:val2017"
    assert len(data.items) == 3 and data.missing == [] and data.unreadable == []
    assert all(it.image.parent == tmp_path / "val2017" and it.image.is_file() for it in data.items)
    assert data.items[0].captions == ("photo number 0", "a second caption for 0")  # cleaned, deduped, no empty
    assert data.num_captions == 6
    assert data.summary() == "coco:val2017: 3 images, 6 captions (2.00 per image), 0 missing, 0 unreadable"
    assert any("1 images listed without any caption" in n for n in data.notes)
    assert any("1 empty captions" in n for n in data.notes) and any("1 duplicate" in n for n in data.notes)
    # the COCO root or the val2017 folder itself both work as ``images``
    assert caps_by_name(load_caption_data("coco", ann, tmp_path)) == caps_by_name(data)
    assert caps_by_name(load_caption_data("coco", ann, tmp_path / "val2017")) == caps_by_name(data)


def test_missing_images_over_threshold_is_an_error_naming_them(tmp_path: Path) -> None:
    ann = make_coco(tmp_path, n_present=2, n_absent=2)
    with pytest.raises(DatasetError) as e:
        load_caption_data("coco", ann)
    msg = str(e.value)
    assert "2 of 4 images" in msg and "50.0%" in msg and str(ann) in msg
    assert "000000000002.jpg" in msg and "000000000003.jpg" in msg
    assert f"looked in {tmp_path / 'val2017'}" in msg and "max_missing_fraction" in msg


def test_missing_images_under_threshold_are_listed_and_logged(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    ann = make_coco(tmp_path, n_present=3, n_absent=1)
    with caplog.at_level(logging.WARNING, logger="training.data.captions"):
        data = load_caption_data("coco", ann, max_missing_fraction=0.25)
    assert len(data.items) == 3
    assert data.missing == [tmp_path / "val2017" / "000000000003.jpg"]
    assert "1 missing" in data.summary()
    assert any("1 of 4 images missing" in r.getMessage() for r in caplog.records)


def test_coco_malformed_files(tmp_path: Path) -> None:
    bad_ref = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}
    ann = write(tmp_path / "captions_x.json", json.dumps(bad_ref))
    with pytest.raises(DatasetError, match=r"annotations\[0\] refers to image_id 2"):
        load_caption_data("coco", ann)
    instances = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1],
                                                                               "category_id": 3}]}
    ann = write(tmp_path / "instances_val2017.json", json.dumps(instances))
    with pytest.raises(DatasetError, match="object-detection 'instances' file"):
        load_caption_data("coco", ann)
    ann = write(tmp_path / "captions_broken.json", '{"images": [\n{"id": 1,\n')
    with pytest.raises(DatasetError, match=r"captions_broken\.json:3: invalid JSON"):
        load_caption_data("coco", ann)


def test_wrong_format_guess_points_to_the_right_one(tmp_path: Path) -> None:
    ann = make_karpathy(tmp_path)
    with pytest.raises(DatasetError, match="not a COCO captions file.*looks like a 'karpathy' file"):
        load_caption_data("coco", ann)
    ann = make_flickr8k(tmp_path / "f8")
    with pytest.raises(DatasetError, match="no column named 'image'.*looks like a 'flickr8k' file"):
        load_caption_data("tsv", ann)


def test_flickr8k_token_file_bom_crlf_and_official_split(tmp_path: Path) -> None:
    ann = make_flickr8k(tmp_path)
    data = load_caption_data("flickr8k", ann)
    assert data.name == "flickr8k" and len(data.items) == 4 and data.num_captions == 20
    first = data.items[0]
    assert first.image == tmp_path / "Flicker8k_Dataset" / "1000_ab.jpg"
    assert first.captions[0] == "caption 0 of image 0 ."  # no BOM, no \r
    test = load_caption_data("flickr8k", ann, split="test")
    assert test.name == "flickr8k:test" and [it.image.name for it in test.items] == ["1001_ab.jpg", "1003_ab.jpg"]
    both = load_caption_data("flickr8k", ann, split="train+test")
    assert len(both.items) == 4
    with pytest.raises(DatasetError, match=r"Flickr_8k\.devImages\.txt.*dataset_flickr8k\.json"):
        load_caption_data("flickr8k", ann, split="val")


def test_flickr8k_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    ann = write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tfine\n\na.jpg#1 no tab here\n")
    with pytest.raises(DatasetError, match=r"Flickr8k\.token\.txt:3: expected 'IMAGE#N<TAB>caption'"):
        load_caption_data("flickr8k", ann)
    kaggle = write(tmp_path / "captions.txt", "image,caption\na.jpg,a dog\n")
    with pytest.raises(DatasetError, match=r"captions\.txt:1: expected .*it looks like a 'csv' file"):
        load_caption_data("flickr8k", kaggle)


def test_flickr30k_results_csv(tmp_path: Path) -> None:
    ann = make_flickr30k(tmp_path)
    data = load_caption_data("flickr30k", ann)
    assert data.name == "flickr30k" and len(data.items) == 3 and data.num_captions == 15
    assert data.items[0].image == tmp_path / "flickr30k_images" / "flickr30k_images" / "500.jpg"
    assert data.items[2].captions[-1] == "A dog runs across the grass ."
    assert "1 rows without '|' after the comment number, read as number + comment (results.csv:16)" in data.notes
    bad = write(tmp_path / "b" / "results.csv", "image_name| comment_number| comment\n1.jpg| 0| ok\n2.jpg only\n")
    with pytest.raises(DatasetError, match=r"results\.csv:3: expected 'image_name\| comment_number\| comment'"):
        load_caption_data("flickr30k", bad)
    with pytest.raises(DatasetError, match="has no split"):
        load_caption_data("flickr30k", ann, split="test")


def test_karpathy_splits_and_filepath(tmp_path: Path) -> None:
    ann = make_karpathy(tmp_path)
    everything = load_caption_data("karpathy", ann)
    assert everything.name == "karpathy-coco" and len(everything.items) == 6 and everything.num_captions == 24
    assert everything.items[0].image == tmp_path / "train2014" / "COCO_train2014_000000000000.jpg"
    assert everything.items[0].captions[-1] == "only tokens 0"  # tokens when there is no raw text
    test = load_caption_data("karpathy", ann, split="test")
    assert test.name == "karpathy-coco:test" and [it.image.name for it in test.items] == [
        "COCO_val2014_000000000002.jpg", "COCO_val2014_000000000004.jpg"]
    train = load_caption_data("karpathy", ann, split="train+restval")
    assert len(train.items) == 3
    # IMAGES may be the COCO root or one of its train2014/ val2014/ folders
    assert load_caption_data("karpathy", ann, tmp_path / "val2014", split="test").items == test.items
    with pytest.raises(DatasetError, match=r"no images with split testing; the file has: restval \(1 images\), "
                                           r"test \(2 images\), train \(2 images\), val \(1 images\)"):
        load_caption_data("karpathy", ann, split="testing")


def test_karpathy_flickr_without_filepath_uses_images_folder(tmp_path: Path) -> None:
    for i in range(2):
        img(tmp_path / "elsewhere" / f"{i}.jpg")
    images = [{"filename": f"{i}.jpg", "split": "test", "sentences": [{"raw": f"c{i}"}, {"raw": f"d{i}"}]}
              for i in range(2)]
    ann = write(tmp_path / "ann" / "dataset_flickr8k.json", json.dumps({"images": images, "dataset": "flickr8k"}))
    data = load_caption_data("auto", ann, tmp_path / "elsewhere", split="test")
    assert data.name == "karpathy-flickr8k:test" and len(data.items) == 2
    assert data.items[1].image == tmp_path / "elsewhere" / "1.jpg" and data.items[1].captions == ("c1", "d1")


def test_csv_groups_rows_quoting_and_relative_paths(tmp_path: Path) -> None:
    ann = make_csv(tmp_path)
    data = load_caption_data("csv", ann)  # paths relative to the CSV's folder
    assert data.name == "csv:pairs"
    assert caps_by_name(data) == {"p0.png": ("a red square, small", "another caption of p0"),
                                  "p1.png": ("a green square",), "p2.png": ("a blue square",)}
    # relative to an images folder given explicitly
    moved = write(tmp_path / "ann" / "moved.csv", "file;text\np0.png;red\np1.png;green\n")
    data = load_caption_data("csv", moved, tmp_path / "imgs", image_column="file", caption_column="text")
    assert caps_by_name(data) == {"p0.png": ("red",), "p1.png": ("green",)}  # ';'-separated found as well


def test_csv_errors_list_columns_and_lines(tmp_path: Path) -> None:
    ann = make_csv(tmp_path)
    with pytest.raises(DatasetError, match=r"no column named 'filepath'; the columns are \['image', 'caption', "
                                           r"'source'\]"):
        load_caption_data("csv", ann, image_column="filepath")
    bad = write(tmp_path / "bad.csv", "image,caption\nimgs/p0.png,ok\nimgs/p1.png,a dog, running\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:3: 3 fields, but the header has 2.*must be quoted"):
        load_caption_data("csv", bad)
    empty_path = write(tmp_path / "e.csv", "image,caption\n,no image\n")
    with pytest.raises(DatasetError, match=r"e\.csv:2: empty 'image'"):
        load_caption_data("csv", empty_path)
    with pytest.raises(DatasetError, match="no 'split' column"):
        load_caption_data("csv", ann, split="train")


def test_tsv_with_split_column_and_windows_paths(tmp_path: Path) -> None:
    img(tmp_path / "a" / "x.jpg")
    img(tmp_path / "a" / "y.jpg")
    ann = write(tmp_path / "pairs.tsv", 'url\ttitle\tsplit\na\\x.jpg\t"quoted" start\ttrain\na/y.jpg\tsecond\tval\n')
    data = load_caption_data("auto", ann, image_column="url", caption_column="title", split="train")
    assert data.name == "tsv:pairs:train"
    assert [(it.image, it.captions) for it in data.items] == [(tmp_path / "a" / "x.jpg", ('"quoted" start',))]


def test_jsonl_caption_and_captions(tmp_path: Path) -> None:
    ann = make_jsonl(tmp_path)
    data = load_caption_data("jsonl", ann)
    assert caps_by_name(data) == {"0.jpg": ("zero", "nought"), "1.jpg": ("one", "uno"), "2.jpg": ("two",)}
    as_array = write(tmp_path / "pairs.json", json.dumps([{"image": "pics/2.jpg", "captions": ["deux", "two"]}]))
    assert caps_by_name(load_caption_data("auto", as_array)) == {"2.jpg": ("deux", "two")}


def test_jsonl_errors(tmp_path: Path) -> None:
    ann = write(tmp_path / "x.jsonl", '{"image": "a.jpg", "caption": "ok"}\n{"image": "b.jpg", "caption": \n')
    with pytest.raises(DatasetError, match=r"x\.jsonl:2: invalid JSON"):
        load_caption_data("jsonl", ann)
    ann = write(tmp_path / "y.jsonl", '{"path": "a.jpg", "caption": "ok"}\n')
    with pytest.raises(DatasetError, match=r"y\.jsonl:1: no 'image' path \(keys: \['caption', 'path'\]\)"):
        load_caption_data("jsonl", ann)
    ann = write(tmp_path / "z.jsonl", '{"image": "a.jpg", "text": "ok"}\n')
    with pytest.raises(DatasetError, match=r"z\.jsonl:1: no 'caption' or 'captions'"):
        load_caption_data("jsonl", ann)


def test_sidecar_folder(tmp_path: Path) -> None:
    folder = make_sidecar(tmp_path)
    data = load_caption_data("sidecar", folder)
    assert data.name == "sidecar:captioned"
    assert caps_by_name(data) == {f"s{i}.jpg": (f"first caption {i}", f"second caption {i}") for i in range(3)}
    assert any("1 images without a .txt caption" in n for n in data.notes)
    assert any("1 .txt files without an image" in n for n in data.notes)


def test_tuxpaint_through_the_same_interface(tmp_path: Path) -> None:
    root = make_tuxpaint(tmp_path / "pkg")
    data = load_caption_data("tuxpaint", root)
    assert data.name == "tuxpaint" and caps_by_name(data) == {"cat.png": ("A cat.",), "apple.png": ("An apple.",)}
    assert detect_format(root / "usr/share/tuxpaint/stamps") == "tuxpaint"


def test_auto_detection_of_every_format(tmp_path: Path) -> None:
    made = {
        "coco": make_coco(tmp_path / "coco"),
        "flickr8k": make_flickr8k(tmp_path / "f8"),
        "flickr30k": make_flickr30k(tmp_path / "f30"),
        "karpathy": make_karpathy(tmp_path / "k"),
        "csv": make_csv(tmp_path / "csv"),
        "jsonl": make_jsonl(tmp_path / "jsonl"),
        "sidecar": make_sidecar(tmp_path / "side"),
        "tuxpaint": make_tuxpaint(tmp_path / "tux"),
    }
    # content-based: names that say nothing
    made["flickr8k_renamed"] = write(tmp_path / "tokens.txt", (tmp_path / "f8" / "Flickr8k.token.txt").read_text())
    made["csv_txt"] = write(tmp_path / "captions.txt", "image,caption\ncsv/imgs/p0.png,x\n")  # Kaggle Flickr8k
    made["coco_renamed"] = write(tmp_path / "val.json", (tmp_path / "coco/annotations/captions_val2017.json")
                                 .read_text())
    for fmt, path in made.items():
        expected = fmt.split("_")[0]
        assert expected in FORMATS
        assert detect_format(path) == expected, path
    assert len(load_caption_data("auto", made["flickr8k_renamed"], tmp_path / "f8" / "Flicker8k_Dataset").items) == 4
    assert len(load_caption_data("auto", made["csv_txt"]).items) == 1
    classes = tmp_path / "classes"
    img(classes / "cat" / "1.jpg")
    with pytest.raises(DatasetError, match="class folder"):
        detect_format(classes)
    with pytest.raises(DatasetError, match="unknown dataset format 'parquet'"):
        load_caption_data("parquet", made["csv"])


def test_encoding_errors_and_missing_files_are_clear(tmp_path: Path) -> None:
    ann = tmp_path / "latin1.csv"
    ann.write_bytes("image,caption\na.jpg,café\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.csv:2: not UTF-8 text"):
        load_caption_data("csv", ann)
    with pytest.raises(DatasetError, match="annotation file not found"):
        load_caption_data("csv", tmp_path / "nope.csv")
    with pytest.raises(DatasetError, match="images folder not found"):
        load_caption_data("csv", make_csv(tmp_path), tmp_path / "no_such_folder")


def test_verify_images_reports_unreadable(tmp_path: Path) -> None:
    ann = make_csv(tmp_path)
    (tmp_path / "imgs" / "p1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    unchecked = load_caption_data("csv", ann)
    assert len(unchecked.items) == 3 and unchecked.unreadable == []
    with pytest.raises(DatasetError, match=r"1 unreadable \(first: .*p1\.png\)"):
        load_caption_data("csv", ann, verify_images=True)
    data = load_caption_data("csv", ann, verify_images=True, max_missing_fraction=0.5)
    assert [it.image.name for it in data.items] == ["p0.png", "p2.png"]
    assert data.unreadable == [tmp_path / "imgs" / "p1.png"] and "1 unreadable" in data.summary()


def test_limit_and_split_by_image(tmp_path: Path) -> None:
    ann = make_flickr8k(tmp_path)
    assert [it.image.name for it in load_caption_data("flickr8k", ann, limit=2).items] == ["1000_ab.jpg",
                                                                                            "1001_ab.jpg"]
    data = load_caption_data("flickr8k", ann)
    rest, held = data.split(0.5, seed=3)
    assert len(rest.items) == 2 and len(held.items) == 2
    assert {it.image for it in rest.items}.isdisjoint({it.image for it in held.items})
    assert {it.image for it in rest.items} | {it.image for it in held.items} == {it.image for it in data.items}
    again_rest, again_held = data.split(0.5, seed=3)
    assert again_held.items == held.items and again_rest.items == rest.items
    assert len({tuple(data.split(0.5, seed=s)[1].items) for s in range(8)}) > 1  # the seed matters


# --- training and evaluation views --------------------------------------------------------------------------------


def _multi_caption_data(tmp_path: Path, n_images: int = 4, n_caps: int = 5) -> CaptionData:
    items = [CaptionedPhoto(img(tmp_path / f"{i}.png", COLOURS[i % 6]), tuple(f"cap {k} of {i}" for k in range(n_caps)))
             for i in range(n_images)]
    return CaptionData("mem", items, [], [])


def test_train_pairs_sample_one_caption_deterministically(tmp_path: Path) -> None:
    data = _multi_caption_data(tmp_path)

    def tf(im: Image.Image) -> float:
        return float(np.asarray(im).mean())

    pairs, twin = TrainPairs(data, tf, seed=7), TrainPairs(data, tf, seed=7)
    per_epoch = []
    for epoch in range(10):
        pairs.set_epoch(epoch)
        twin.set_epoch(epoch)
        got = [pairs[i][1] for i in range(len(pairs))]
        assert got == [twin[i][1] for i in range(len(twin))]  # same (seed, epoch, index) → same caption
        per_epoch.append(got)
    for i in range(len(data.items)):
        seen = [per_epoch[e][i] for e in range(10)]
        assert sorted(seen[:5]) == sorted(data.items[i].captions)  # every caption once per 5 epochs
        assert sorted(seen[5:]) == sorted(data.items[i].captions)
    other = TrainPairs(data, tf, seed=8)
    assert [other.caption_index(i, 0) for i in range(4)] != [pairs.caption_index(i, 0) for i in range(4)] or [
        other.caption_index(i, 1) for i in range(4)] != [pairs.caption_index(i, 1) for i in range(4)]
    image, caption = pairs[-1]
    assert caption.endswith("of 3") and image == pytest.approx(np.mean(COLOURS[3]))


def test_train_pairs_substitutes_a_corrupt_image_and_logs_once(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import torch

    data = _multi_caption_data(tmp_path, n_images=3, n_caps=1)
    data.items[1].image.write_bytes(b"corrupt")
    pairs = TrainPairs(data, lambda im: torch.from_numpy(np.asarray(im).copy()))
    with caplog.at_level(logging.WARNING, logger="training.data.captions"):
        batches = list(torch.utils.data.DataLoader(pairs, batch_size=3))
        again = pairs[1]
    assert list(batches[0][1]) == ["cap 0 of 0", "cap 0 of 2", "cap 0 of 2"]  # index 1 → the next readable, 2
    assert again[1] == "cap 0 of 2"
    assert sum("unreadable training image" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(IndexError):
        pairs[3]


def test_eval_lists_and_caption_recall(tmp_path: Path) -> None:
    data = _multi_caption_data(tmp_path, n_images=3, n_caps=2)
    images, captions, c2i = eval_lists(data)
    assert images == [it.image for it in data.items]
    assert captions == ["cap 0 of 0", "cap 1 of 0", "cap 0 of 1", "cap 1 of 1", "cap 0 of 2", "cap 1 of 2"]
    assert c2i.tolist() == [0, 0, 1, 1, 2, 2] and c2i.dtype == np.int64
    image_emb = np.eye(3, dtype=np.float32)
    text_emb = image_emb[c2i]  # every caption exactly on its image
    perfect = caption_recall(image_emb, text_emb, c2i, ks=(1,))
    assert perfect == {"t2i_R@1": 100.0, "i2t_R@1": 100.0}
    # image 0's first caption points at image 1, its second stays right: i2t still hits (any caption counts)
    text_emb[0] = image_emb[1]
    r = caption_recall(image_emb, text_emb, c2i, ks=(1, 2))
    assert r["t2i_R@1"] == pytest.approx(100 * 5 / 6) and r["t2i_R@2"] == 100.0
    assert r["i2t_R@1"] == pytest.approx(100 * 2 / 3)  # image 1: captions 0, 2 and 3 tie, caption 0 ranks first


def test_caption_recall_equals_recall_at_k_on_a_relevance_matrix() -> None:
    rng = np.random.default_rng(0)
    n_img, n_cap = 40, 130
    c2i = np.sort(rng.integers(0, n_img, n_cap))
    image_emb = rng.integers(-2, 3, (n_img, 4)).astype(np.float32)  # small integers: many exact ties
    text_emb = rng.integers(-2, 3, (n_cap, 4)).astype(np.float32)
    rel = c2i[:, None] == np.arange(n_img)[None, :]
    sims = text_emb @ image_emb.T
    ks = (1, 3, 10)
    got = caption_recall(image_emb, text_emb, c2i, ks, chunk=7)
    for k, v in recall_at_k(sims, rel, ks).items():
        assert got[f"t2i_R@{k}"] == pytest.approx(v)
    has = rel.any(0)  # images without captions count as misses, as in recall_at_k
    for k, v in recall_at_k(sims.T, rel.T, ks).items():
        assert got[f"i2t_R@{k}"] == pytest.approx(v)
    assert not has.all()  # the fixture does include images without captions


# --- class folders and the command ----------------------------------------------------------------------------------


def test_class_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "zs"
    img(root / "golden_retriever" / "a.jpg", (200, 160, 40))
    img(root / "golden_retriever" / "nested" / "b.png", (200, 160, 40))
    img(root / "n01443537-goldfish" / "c.jpg", (250, 120, 0))
    img(root / "001.Black_footed_Albatross" / "d.jpg", (20, 20, 20))
    img(root / "t-shirt" / ".hidden.jpg")
    write(root / "golden_retriever" / "notes.txt", "not an image")
    img(root / "loose.jpg")
    with caplog.at_level(logging.WARNING, logger="training.data.captions"):
        cf = load_class_folder(root)
    assert cf.folders == ["001.Black_footed_Albatross", "golden_retriever", "n01443537-goldfish", "t-shirt"]
    assert cf.classes == ["Black footed Albatross", "golden retriever", "goldfish", "t-shirt"]
    assert [(p.name, label) for p, label in cf.items] == [("d.jpg", 0), ("a.jpg", 1), ("b.png", 1), ("c.jpg", 2)]
    assert cf.labels.tolist() == [0, 1, 1, 2]
    msgs = " | ".join(r.getMessage() for r in caplog.records)
    assert "'t-shirt' has no images" in msgs and "1 images directly in the root" in msgs
    # fits zero_shot_accuracy: a fake encoder that knows each class by name
    protos = {c: np.eye(4, dtype=np.float32)[i] for i, c in enumerate(cf.classes)}

    def encode(texts: list[str]) -> np.ndarray:
        return np.stack([next(v for c, v in protos.items() if c in t) for t in texts])

    image_emb = np.stack([np.eye(4, dtype=np.float32)[label] for label in cf.labels])
    assert zero_shot_accuracy(image_emb, cf.labels, cf.classes, encode) == 100.0
    assert readable_class_name("golden_retriever") == "golden retriever"
    img(root / "golden retriever" / "e.jpg")
    with pytest.raises(DatasetError, match="both read as class 'golden retriever'"):
        load_class_folder(root)


def test_class_folder_verify_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "zs"
    img(root / "cat" / "a.jpg")
    (root / "dog").mkdir()
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    cf = load_class_folder(root, verify_images=True)
    assert cf.classes == ["cat", "dog"] and cf.unreadable == [root / "dog" / "broken.jpg"]
    assert [p.name for p in cf.paths] == ["a.jpg"]
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_class_folder(root / "cat")
    with pytest.raises(DatasetError, match="class folder not found"):
        load_class_folder(tmp_path / "nothing")


def test_main_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ann = make_coco(tmp_path, n_present=3, n_absent=1)
    assert main_check(["coco", str(ann), str(tmp_path / "val2017"), "--examples", "1"]) == 1
    assert "1 of 4 images" in capsys.readouterr().err
    assert main_check(["auto", str(ann), "--max-missing-fraction", "0.5", "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("coco:val2017: 3 images, 6 captions (2.00 per image), 1 missing, 0 unreadable")
    assert "missing: " in out and "- photo number 0" in out
    img(tmp_path / "zs" / "golden_retriever" / "x.jpg")
    assert main_check(["classes", str(tmp_path / "zs")]) == 0
    assert "'golden retriever' (golden_retriever/): 1 images" in capsys.readouterr().out
