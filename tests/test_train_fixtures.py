"""Small local training data and models for the engine tests (written in tmp_path; nothing is downloaded).

The photos are learnable: each caption word has its own stripe pattern and each colour word tints it, so a model
that trains can tell "a red cat" from "a blue sea". Also checks these fixtures themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ["cat", "dog", "car", "beach", "sunset", "tree", "house", "sea"]
COLOURS = {"red": (1.0, 0.2, 0.2), "blue": (0.2, 0.3, 1.0), "green": (0.2, 1.0, 0.3)}
VOCAB_WORDS = ["a", "an", "the", "photo", "of", "cat", "dog", "red", "blue", "green", "car", "beach", "sunset", "tree",
               "house", "sea", "sky", "person", "bird"]


def write_tokenizer(folder: Path) -> Path:
    """A BERT WordPiece tokenizer over a tiny vocabulary (the words of the captions, letters and ##letters)."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + VOCAB_WORDS
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return folder


def photo(word: str, colour: str, seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    w, h = size
    a, b = np.random.default_rng(WORDS.index(word) if word in WORDS else 99).uniform(-8, 8, 2)
    yy, xx = np.mgrid[0:h, 0:w] / w
    pattern = 0.5 + 0.5 * np.sin(a * xx + b * yy)
    img = pattern[..., None] * np.array(COLOURS[colour]) * 230
    img = img + np.random.default_rng(1000 + seed).normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def caption_items(n: int = 48) -> list[tuple[str, str, str, list[str]]]:
    """(relative path, word, colour, captions) for ``n`` photos: 8 words × 3 colours, two captions each."""
    out = []
    for i in range(n):
        word, colour = WORDS[i % len(WORDS)], list(COLOURS)[(i // len(WORDS)) % len(COLOURS)]
        out.append((f"p{i:03d}.jpg", word, colour, [f"a {colour} {word}", f"the photo of a {word}"]))
    return out


def write_images(folder: Path, n: int = 48) -> list[tuple[str, str, str, list[str]]]:
    items = caption_items(n)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (rel, word, colour, _) in enumerate(items):
        photo(word, colour, i).save(folder / rel)
    return items


def write_jsonl(root: Path, n: int = 48) -> Path:
    """root/captions.jsonl + root/images/*.jpg (the vit-b-32-scratch recipe's layout)."""
    items = write_images(root / "images", n)
    path = root / "captions.jsonl"
    path.write_text("".join(json.dumps({"image": rel, "captions": caps}) + "\n" for rel, _, _, caps in items))
    return path


def write_sidecar(root: Path, n: int = 48) -> Path:
    """root/<photo>.jpg with root/<photo>.txt beside it (the heads-cached recipe's layout)."""
    for rel, _, _, caps in write_images(root, n):
        (root / rel).with_suffix(".txt").write_text("\n".join(caps) + "\n")
    return root


def write_karpathy(root: Path, n: int = 48) -> Path:
    """root/dataset_coco.json + root/images/train2014|val2014/*.jpg (the clip-finetune-coco recipe's layout):
    splits train / restval / val / test like Karpathy's file."""
    items = caption_items(n)
    images = []
    for i, (rel, word, colour, caps) in enumerate(items):
        split = ("train", "train", "restval", "test")[i % 4] if i < n - 4 else "val"
        filepath = "val2014" if split in ("val", "test", "restval") else "train2014"
        (root / "images" / filepath).mkdir(parents=True, exist_ok=True)
        photo(word, colour, i).save(root / "images" / filepath / rel)
        images.append({"filepath": filepath, "filename": rel, "split": split, "imgid": i,
                       "sentences": [{"raw": c, "tokens": c.split()} for c in caps]})
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path


def write_class_folder(root: Path, per_class: int = 3) -> Path:
    """root/<colour>/*.jpg: a zero-shot class folder."""
    for c, colour in enumerate(COLOURS):
        (root / colour).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            photo(WORDS[k], colour, 500 + 10 * c + k).save(root / colour / f"{k}.jpg")
    return root


def write_tiny_hf(folder: Path, kind: str = "clip", seed: int = 0) -> Path:
    """A tiny random CLIPModel / SiglipModel saved with save_pretrained, with tokenizer and image processor."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "<s>": 3}
    for w in VOCAB_WORDS:
        vocab[w] = len(vocab)
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    t.normalizer = normalizers.Lowercase()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    t.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 3), ("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                  unk_token="<unk>", model_max_length=16)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 0, "bos_token_id": 3,
            "eos_token_id": 1}
    torch.manual_seed(seed)
    if kind == "clip":
        from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
        proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        proc = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    return folder


def test_fixtures_load_as_the_recipes_expect(tmp_path):
    from training.data.captions import load_caption_data, load_class_folder

    jsonl = load_caption_data("jsonl", write_jsonl(tmp_path / "j", 16), tmp_path / "j" / "images")
    assert len(jsonl.items) == 16 and jsonl.num_captions == 32
    side = load_caption_data("sidecar", write_sidecar(tmp_path / "s", 16))
    assert len(side.items) == 16
    ann = write_karpathy(tmp_path / "k", 16)
    train = load_caption_data("karpathy", ann, tmp_path / "k" / "images", split="train+restval")
    test = load_caption_data("karpathy", ann, tmp_path / "k" / "images", split="test")
    assert (len(train.items), len(test.items)) == (9, 3)
    cf = load_class_folder(write_class_folder(tmp_path / "c"))
    assert cf.classes == ["blue", "green", "red"] and len(cf.items) == 9
    tok = write_tokenizer(tmp_path / "tok")
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(tok))("a red cat")["input_ids"]
    assert 1 not in ids  # no [UNK]: the words are in the vocabulary
