"""Hugging Face CLIP / SigLIP folders give the same vectors through photosearch as through transformers itself.

Tiny random models, tokenizers and image processors are built offline here and saved with ``save_pretrained``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from photosearch.model import (
    CheckpointCorruptError,
    CheckpointNotFoundError,
    EmbeddingModel,
    UnsupportedCheckpointError,
    load_model,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TOL = 1e-5
TEXT_LEN = 16  # max_position_embeddings of the tiny text towers
TEXTS = [
    "a cat",
    "A photo of a DOG on the sofa, at night!",
    "the cat on the sofa " * 6,  # longer than TEXT_LEN tokens: truncated
    "dog",
]


@dataclass
class Built:
    """A saved tiny model: the folder, the in-memory reference model, its tokenizer and PIL image processor."""

    folder: Path
    hf: torch.nn.Module
    tokenizer: Any
    image_processor: Any
    tokenize: Callable[[list[str]], dict[str, torch.Tensor]]


def _features(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _norm(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).numpy()


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def _vision_config() -> dict[str, Any]:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                patch_size=8)


def _clip_tokenizer() -> Any:
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c + "</w>"] = len(vocab)
    merges = [("a", "t</w>"), ("c", "at</w>"), ("o", "g</w>"), ("d", "og</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def _siglip_tokenizer() -> Any:
    """A word-level stand-in for SiglipTokenizer: lowercases, appends </s>, pads with </s>, returns no mask."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in ["a", "cat", "dog", "photo", "of", "the", "on", "sofa", "at", "night"]:
        vocab[w] = len(vocab)
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    t.normalizer = normalizers.Lowercase()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    t.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=t, pad_token="</s>", eos_token="</s>", unk_token="<unk>", model_input_names=["input_ids"],
        model_max_length=TEXT_LEN,
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    folder = tmp_path_factory.mktemp("hf") / "tiny-clip"
    tok = _clip_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=TEXT_LEN, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=_vision_config(), projection_dim=16)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    # shortest edge 35 → crops with odd margins, where HF's centre crop (floor) and torchvision's (round) differ
    CLIPImageProcessorPil(size={"shortest_edge": 35}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    proc = CLIPImageProcessorPil.from_pretrained(folder)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:  # the documented CLIP usage
        return dict(tok(texts, padding=True, truncation=True, max_length=TEXT_LEN, return_tensors="pt"))

    return Built(folder, model, tok, proc, tokenize)


@pytest.fixture(scope="module")
def siglip(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    folder = tmp_path_factory.mktemp("hf") / "tiny-siglip"
    tok = _siglip_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=TEXT_LEN, pad_token_id=1, eos_token_id=1, bos_token_id=1)
    torch.manual_seed(1)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=_vision_config())).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}, resample=2).save_pretrained(folder)
    proc = SiglipImageProcessorPil.from_pretrained(folder)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:  # what the SigLIP docs and pipeline do
        return dict(tok(texts, padding="max_length", truncation=True, max_length=TEXT_LEN, return_tensors="pt"))

    return Built(folder, model, tok, proc, tokenize)


@pytest.fixture(params=["clip", "siglip"])
def built(request: pytest.FixtureRequest) -> Built:
    return request.getfixturevalue(request.param)


@pytest.fixture
def ours(built: Built) -> EmbeddingModel:
    return load_model(built.folder, device="cpu", image_backend="torch")


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for w, h in [(50, 37), (40, 64)]]


# -- 1–4: parity --------------------------------------------------------------------------------------------------
def test_loads_with_expected_info(built: Built, ours: EmbeddingModel) -> None:
    kind = "hf_clip" if "clip" in built.folder.name else "hf_siglip"
    dim = 16 if kind == "hf_clip" else 32
    assert (ours.info.kind, ours.info.embed_dim, ours.info.visual_dim, ours.info.name) == (kind, dim, dim,
                                                                                            built.folder.name)
    assert len(ours.model_id) == 16 and ours.preprocess_config.size == 32


@torch.inference_mode()
def test_image_features_from_pixels(built: Built, ours: EmbeddingModel) -> None:
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ref = _norm(_features(built.hf.get_image_features(pixel_values=pixels)))
    emb, visual = ours.encode_pixels(pixels.numpy())
    print(f"\n{built.folder.name} pixels → image embedding max|Δ| = {_maxdiff(emb, ref):.3g}")
    assert _maxdiff(emb, ref) <= TOL
    assert _maxdiff(visual, ref) <= TOL


@torch.inference_mode()
def test_images_from_pil_match_hf_processor(built: Built, ours: EmbeddingModel) -> None:
    images = _images()
    hf_pixels = built.image_processor(images=images, return_tensors="pt")["pixel_values"]
    ours_pixels = np.stack([ours.preprocess(im) for im in images])
    print(f"\n{built.folder.name} preprocessing max|Δpixel| = {_maxdiff(ours_pixels, hf_pixels.numpy()):.3g}")
    assert _maxdiff(ours_pixels, hf_pixels.numpy()) <= TOL
    ref = _norm(_features(built.hf.get_image_features(pixel_values=hf_pixels)))
    got = ours.encode_images(images)
    print(f"{built.folder.name} PIL → image embedding max|Δ| = {_maxdiff(got, ref):.3g}")
    assert _maxdiff(got, ref) <= TOL


@torch.inference_mode()
def test_text_features(built: Built, ours: EmbeddingModel) -> None:
    tokens = built.tokenize(TEXTS)
    ref = _norm(_features(built.hf.get_text_features(**tokens)))
    got = ours.encode_texts(TEXTS)
    print(f"\n{built.folder.name} text embedding max|Δ| = {_maxdiff(got, ref):.3g}")
    assert _maxdiff(got, ref) <= TOL
    # the tokenisation itself is the reference one (SigLIP: fixed length, no attention mask)
    ours_tokens = ours.tokenize(TEXTS)
    assert set(ours_tokens) == set(tokens)
    assert all(torch.equal(ours_tokens[k], tokens[k]) for k in tokens)
    if "siglip" in built.folder.name:
        assert tokens["input_ids"].shape == (len(TEXTS), TEXT_LEN)
    else:
        assert tokens["input_ids"].shape[1] == TEXT_LEN and bool((tokens["attention_mask"][0] == 0).any())


@torch.inference_mode()
def test_scores_are_hf_cosines(built: Built, ours: EmbeddingModel) -> None:
    images = _images()
    img = _features(built.hf.get_image_features(**built.image_processor(images=images, return_tensors="pt")))
    txt = _features(built.hf.get_text_features(**built.tokenize(TEXTS)))
    ref = torch.nn.functional.cosine_similarity(img[:, None, :], txt[None, :, :], dim=-1).numpy()
    got = ours.encode_images(images) @ ours.encode_texts(TEXTS).T
    print(f"\n{built.folder.name} image·text scores max|Δ| = {_maxdiff(got, ref):.3g}")
    assert _maxdiff(got, ref) <= TOL


# -- 5: identity and errors ---------------------------------------------------------------------------------------
def test_model_id_stable_and_weight_sensitive(clip: Built, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    a = load_model(clip.folder, device="cpu", image_backend="torch")
    b = load_model(clip.folder, device="cpu", image_backend="torch")
    assert a.model_id == b.model_id
    other = tmp_path / "tiny-clip-2"
    shutil.copytree(clip.folder, other)
    assert load_model(other, device="cpu", image_backend="torch").model_id == a.model_id  # content, not location
    sd = load_file(str(other / "model.safetensors"))
    key = "visual_projection.weight"
    sd[key] = sd[key] + 0.01
    save_file(sd, str(other / "model.safetensors"), metadata={"format": "pt"})
    changed = load_model(other, device="cpu", image_backend="torch")
    assert changed.model_id != a.model_id
    assert _maxdiff(changed.encode_pixels(np.zeros((1, 3, 32, 32), np.float32))[0],
                    a.encode_pixels(np.zeros((1, 3, 32, 32), np.float32))[0]) > 0


def test_pickle_only_folder_is_refused(clip: Built, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(clip.folder / name, folder / name)
    torch.save(clip.hf.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(UnsupportedCheckpointError, match="safe_serialization"):
        load_model(folder, device="cpu", image_backend="torch")


def test_garbage_or_missing_config(tmp_path: Path) -> None:
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "config.json").write_bytes(b"\x00{not json")
    with pytest.raises(CheckpointCorruptError):
        load_model(tmp_path / "garbage", device="cpu", image_backend="torch")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError):
        load_model(tmp_path / "empty", device="cpu", image_backend="torch")


def test_unrelated_model_type_is_refused(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    BertModel(cfg).save_pretrained(tmp_path / "bert", safe_serialization=True)
    with pytest.raises(UnsupportedCheckpointError, match="bert"):
        load_model(tmp_path / "bert", device="cpu", image_backend="torch")


def test_siglip2_is_refused_clearly(siglip: Built, tmp_path: Path) -> None:
    from photosearch.model.hf import load_hf_model

    folder = tmp_path / "siglip2"
    shutil.copytree(siglip.folder, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "siglip2"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedCheckpointError):
        load_model(folder, device="cpu", image_backend="torch")
    with pytest.raises(UnsupportedCheckpointError, match="SigLIP 2"):
        load_hf_model(folder, "cpu")


def test_missing_tokenizer_and_preprocessor(siglip: Built, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copy(siglip.folder / "config.json", folder / "config.json")
    shutil.copy(siglip.folder / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="tokenizer"):
        load_model(folder, device="cpu", image_backend="torch")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(siglip.folder / name, folder / name)
    with caplog.at_level(logging.WARNING, logger="photosearch.model.hf"):
        m = load_model(folder, device="cpu", image_backend="torch")
    assert "preprocessor_config.json" in caplog.text
    cfg = m.preprocess_config
    assert (cfg.resize_mode, cfg.size, cfg.interpolation, cfg.mean) == ("squash", 32, "bicubic", (0.5, 0.5, 0.5))


def test_sharded_safetensors(clip: Built, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    clip.hf.save_pretrained(folder, safe_serialization=True, max_shard_size="50KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(clip.folder / name, folder / name)
    assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
    m = load_model(folder, device="cpu", image_backend="torch")
    ref = load_model(clip.folder, device="cpu", image_backend="torch")
    assert _maxdiff(m.encode_texts(TEXTS), ref.encode_texts(TEXTS)) <= TOL
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointNotFoundError, match=shard.name):
        load_model(folder, device="cpu", image_backend="torch")


def test_legacy_and_default_processor_configs() -> None:
    from photosearch.model.hf import preprocess_from_hf

    # openai/clip-vit-base-patch32 as first published: bare ints, CLIPFeatureExtractor
    legacy = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
              "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}
    cfg = preprocess_from_hf(legacy, "clip", 224)
    assert (cfg.resize_mode, cfg.resize, cfg.size, cfg.interpolation) == ("shortest", 224, 224, "bicubic")
    siglip = {"size": {"height": 384, "width": 384}, "resample": 2, "do_normalize": False}
    cfg = preprocess_from_hf(siglip, "siglip", 384)
    assert (cfg.resize_mode, cfg.size, cfg.interpolation, cfg.mean, cfg.std) == (
        "squash", 384, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(UnsupportedCheckpointError, match="non-square"):
        preprocess_from_hf({"size": {"height": 224, "width": 256}}, "siglip", 224)


def test_heatmap_attention_rollout(built: Built, ours: EmbeddingModel, tmp_path) -> None:
    """Why-this-match heatmaps on CLIP (class token) and SigLIP (attention pooling, no class token)."""
    from photosearch.explain.heatmap import Explainer

    img = _images()[0]
    path = tmp_path / "p.png"
    img.save(path)
    q = ours.encode_texts(["a photo of a cat"])[0]
    ex = Explainer(ours)
    hm = ex.explain(str(path), q)
    side = 32 // _vision_config()["patch_size"]
    assert hm.method == "grad-rollout" and hm.values.shape == (side, side)
    assert np.isfinite(hm.values).all() and hm.values.max() == pytest.approx(1.0)
    assert hm.score == pytest.approx(float(ours.encode_images([str(path)])[0] @ q), abs=1e-4)
    plain = ex.explain(str(path), q, method="rollout")
    assert plain.values.shape == (side, side)
    # the model still encodes as before (attention implementation restored)
    assert float(ours.encode_images([str(path)])[0] @ q) == pytest.approx(hm.score, abs=1e-4)
