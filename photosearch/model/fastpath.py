"""Fast CPU image path: the image tower + head exported to ONNX and run by ONNX Runtime.

On the 2-core reference machine ONNX Runtime runs EfficientNet-Lite0 3–4× faster than torch eager. The export
is cached per model id; before it is used, its outputs are compared with torch on a probe batch and it is only
enabled when every vector's cosine with the reference is ≥ 0.9999.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from photosearch.model.encoder import EmbeddingModel, l2_normalize
from photosearch.model.errors import ModelError
from photosearch.model.onnx_model import FastTokenizer, _session, export_paths, tokenizer_dir

log = logging.getLogger(__name__)
PARITY_MIN_COSINE = 0.9999


class _ImagePart(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.encode_image(pixels)


def export_onnx(model: EmbeddingModel, path: Path) -> None:
    """Export the model's image path to ``path`` atomically (batch dimension dynamic)."""
    size = model.preprocess_config.size
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        part = _ImagePart(model.module).eval().cpu()
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                part,
                (torch.zeros(2, 3, size, size),),
                tmp,
                input_names=["pixels"],
                output_names=["embedding", "visual"],
                dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}, "visual": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((l2_normalize(a) * l2_normalize(b)).sum(-1).min())


class OnnxImageRunner:
    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb, visual = self.session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        return emb, visual


def enable_onnx(model: EmbeddingModel, required: bool = False, threads: int | None = None) -> bool:
    """Switch ``model`` to ONNX Runtime for images when available and numerically equal to torch."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if required:
            raise ModelError("ONNX Runtime is not installed: pip install onnxruntime") from None
        return False
    size = model.preprocess_config.size
    path = export_paths(model.model_id, size)[0]
    try:
        if not path.is_file():
            log.info("exporting %s image tower to ONNX at %s", model.info.name, path)
            path.with_suffix(".verified").unlink(missing_ok=True)
            export_onnx(model, path)
        runner = OnnxImageRunner(path, threads)
        verified = path.with_suffix(".verified")  # parity is checked once per export, not at every start
        cos = float(verified.read_text()) if verified.is_file() else None
        if cos is None:
            probe = np.random.default_rng(0).standard_normal((3, 3, size, size)).astype(np.float32)
            ref_e, ref_v = model._torch_image_runner(probe)
            got_e, got_v = runner(probe)
            cos = min(min_cosine(ref_e, got_e), min_cosine(ref_v, got_v))
            if cos < PARITY_MIN_COSINE:
                path.unlink(missing_ok=True)
                raise ModelError(f"ONNX image path disagrees with torch (min cosine {cos:.6f}); using torch")
            verified.write_text(f"{cos:.8f}\n")
    except Exception as e:  # noqa: BLE001 - any export/runtime failure falls back to the reference path
        if required:
            raise ModelError(f"ONNX Runtime image path unavailable: {e}") from e
        log.warning("ONNX Runtime image path unavailable for %s, using torch: %s", model.info.name, e)
        return False
    model.set_image_runner(runner, "onnx")
    log.info("image encoding via ONNX Runtime (min cosine vs torch %.6f)", cos)
    return True


class _TextPart(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.module.encode_text(input_ids=input_ids, attention_mask=attention_mask)


PROBE_TEXTS = ["a cat", "dog on a beach at sunset", "A US 25 cent piece ($.25) called a quarter.",
               "the red car parked next to a very old stone house by the sea, photographed at night in winter " * 3,
               "T-shirt", "ünïcödé café", ""]


def enable_onnx_text(model: EmbeddingModel, threads: int | None = None) -> bool:
    """Export the text tower + head to ONNX and verify it (with the ``tokenizers``-library tokenizer) against
    torch, so later starts can load without torch (``photosearch.model.onnx_model``). Composed models only."""
    if model.info.kind != "dual_encoder":
        return False
    from photosearch.model.composed_config import read_config

    path = export_paths(model.model_id, model.preprocess_config.size)[1]
    verified = path.with_suffix(".verified")
    try:
        cfg = read_config(model.info.path)
        tokenize = FastTokenizer(tokenizer_dir(cfg.text, Path(model.info.path)), cfg.text.max_length)
        if not path.is_file():
            verified.unlink(missing_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
            os.close(fd)
            try:
                ids = torch.from_numpy(tokenize(["a photo of a cat", "x"])["input_ids"])
                with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        _TextPart(model.module).eval().cpu(), (ids, torch.ones_like(ids)), tmp,
                        input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                      "embedding": {0: "batch"}},
                        opset_version=17, dynamo=False,
                    )
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        if not verified.is_file():
            session = _session(path, threads)
            got = session.run(None, tokenize(PROBE_TEXTS))[0]
            cos = min_cosine(model._text_runner(PROBE_TEXTS), got)
            if cos < PARITY_MIN_COSINE:
                path.unlink(missing_ok=True)
                raise ModelError(f"ONNX text path disagrees with torch (min cosine {cos:.6f})")
            verified.write_text(f"{cos:.8f}\n")
    except Exception as e:  # noqa: BLE001 - torch keeps serving text; only the fast start is lost
        log.warning("ONNX text export unavailable for %s: %s", model.info.name, e)
        return False
    return True
