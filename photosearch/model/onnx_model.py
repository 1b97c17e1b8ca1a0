"""Start-up without torch: a composed model whose image and text paths were exported to ONNX (and proven equal
to torch) loads from those exports alone — ONNX Runtime + the ``tokenizers`` library, no torch, no transformers.

The exports live in the cache (``$PHOTOSEARCH_CACHE`` or the user cache folder) under ``onnx/``, keyed by model
id; ``photosearch.model.fastpath`` writes and verifies them the first time the model is loaded with torch. A
checkpoint may also carry its own pre-built, pre-verified exports in an ``onnx/`` folder next to its config.json
(the installer bundle does: it ships no torch); those are tried first.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from photosearch.model.base import EncoderBase, ModelInfo
from photosearch.model.config import DualEncoderConfig, TextTowerConfig, read_json

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    base = os.environ.get("PHOTOSEARCH_CACHE")
    if base:
        return Path(base)
    import platformdirs

    return Path(platformdirs.user_cache_dir("photosearch"))


SHIPPED_EXPORTS_DIR = "onnx"


def export_paths(model_id: str, image_size: int) -> tuple[Path, Path]:
    folder = cache_dir() / "onnx"
    return folder / f"{model_id}-{image_size}.onnx", folder / f"{model_id}-text.onnx"


def shipped_export_paths(checkpoint_dir: Path, model_id: str, image_size: int) -> tuple[Path, Path]:
    """Exports shipped with a checkpoint (``<checkpoint>/onnx/``, same names as in the cache; written by
    packaging/build.py from exports verified against torch at build time)."""
    folder = Path(checkpoint_dir) / SHIPPED_EXPORTS_DIR
    return folder / f"{model_id}-{image_size}.onnx", folder / f"{model_id}-text.onnx"


def is_verified(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".verified").is_file()


def tokenizer_dir(cfg: TextTowerConfig, checkpoint_dir: Path) -> Path:
    from photosearch.model.weights import resolve_source

    src = cfg.tokenizer or cfg.weights
    return resolve_source(src, checkpoint_dir)


class FastTokenizer:
    """The checkpoint's tokenizer.json run by the ``tokenizers`` library with the text tower's padding and
    truncation (the same rules transformers applies: pad to the longest text, cut at ``max_length``)."""

    def __init__(self, folder: Path, max_length: int):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad = "[PAD]"
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            f = folder / name
            if f.is_file():
                v = json.loads(f.read_text(encoding="utf-8")).get("pad_token")
                pad = (v.get("content") if isinstance(v, dict) else v) or pad
        pad_id = self.tok.token_to_id(pad)
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_length)
        self.tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self.tok.encode_batch(texts)
        return {"input_ids": np.array([e.ids for e in enc], np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    env = os.environ.get("PHOTOSEARCH_THREADS", "")
    so.intra_op_num_threads = threads or (int(env) if env.isdigit() and int(env) > 0 else max(1, os.cpu_count() or 1))
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OnnxModel(EncoderBase):
    """A composed model served entirely by ONNX Runtime (CPU)."""

    image_backend = "onnx"
    text_backend = "onnx"
    device = "cpu"

    def __init__(self, cfg: DualEncoderConfig, checkpoint_dir: Path, image_onnx: Path, text_onnx: Path,
                 threads: int | None = None):
        info = ModelInfo(model_id=cfg.model_id, name=cfg.name, kind="dual_encoder", embed_dim=cfg.embed_dim,
                         visual_dim=cfg.image.feature_dim, path=str(checkpoint_dir))
        super().__init__(cfg.preprocess, info)
        self.image_session = _session(image_onnx, threads)
        self.text_session = _session(text_onnx, threads)
        self.tokenize = FastTokenizer(tokenizer_dir(cfg.text, checkpoint_dir), cfg.text.max_length)

    def _image_runner(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb, visual = self.image_session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        return emb, visual

    def _text_runner(self, texts: list[str]) -> np.ndarray:
        return self.text_session.run(None, self.tokenize(texts))[0]


def try_load_onnx_only(path: Path, threads: int | None = None) -> OnnxModel | None:
    """The ONNX-only model when verified exports for this exact checkpoint exist, else None (load with torch)."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    try:
        from photosearch.model.composed_config import verified_config

        cfg = verified_config(path)
        for image_onnx, text_onnx in (shipped_export_paths(path, cfg.model_id, cfg.preprocess.size),
                                      export_paths(cfg.model_id, cfg.preprocess.size)):
            if is_verified(image_onnx) and is_verified(text_onnx):
                return OnnxModel(cfg, path, image_onnx, text_onnx, threads)
        return None
    except Exception as e:  # noqa: BLE001 - any problem: the torch path loads (and reports errors properly)
        log.info("ONNX-only start unavailable for %s (%s); loading with torch", path, e)
        return None


__all__ = ["OnnxModel", "export_paths", "is_verified", "read_json", "shipped_export_paths", "try_load_onnx_only"]
