"""The one interface every model kind presents to the app: encode photos and texts into a shared space."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from photosearch.model.base import EncoderBase, ImageRunner, ModelInfo, TextRunner
from photosearch.model.config import PreprocessConfig
from photosearch.model.vectors import l2_normalize  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


class ImageTextModule(Protocol):
    """What a torch module must offer to sit behind :class:`EmbeddingModel`."""

    def encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def encode_text(self, **tokens: torch.Tensor) -> torch.Tensor: ...


Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class EmbeddingModel(EncoderBase):
    """A model running in torch (CPU or CUDA); on CPU the image path may be swapped for ONNX Runtime."""

    def __init__(
        self,
        module: torch.nn.Module,
        tokenize: Tokenizer,
        preprocess: PreprocessConfig,
        info: ModelInfo,
        device: torch.device,
    ):
        super().__init__(preprocess, info)
        self.module = module.eval().to(device)
        self.tokenize = tokenize
        self.device = device
        self._image_runner = self._torch_image_runner  # type: ignore[method-assign]

    @torch.inference_mode()
    def _torch_image_runner(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
        emb, visual = self.module.encode_image(x)
        return emb.float().cpu().numpy(), visual.float().cpu().numpy()

    @torch.inference_mode()
    def _text_runner(self, texts: list[str]) -> np.ndarray:
        tokens = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        return self.module.encode_text(**tokens).float().cpu().numpy()

    def set_image_runner(self, runner: ImageRunner, backend: str) -> None:
        """Replace the torch image path with an equivalent faster one (see ``photosearch.model.fastpath``)."""
        self._image_runner, self.image_backend = runner, backend  # type: ignore[method-assign]

    def set_text_runner(self, runner: TextRunner, backend: str) -> None:
        self._text_runner, self.text_backend = runner, backend  # type: ignore[method-assign]


from photosearch.model.composed_config import checkpoint_kind  # noqa: F401 - re-exported (torch-free)
