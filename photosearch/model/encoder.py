"""The one interface every model kind presents to the app: encode photos and texts into a shared space."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
import torch

from photosearch.model.config import PreprocessConfig
from photosearch.model.preprocess import ImageInput, ImagePreprocessor
from photosearch.model.vectors import l2_normalize

log = logging.getLogger(__name__)


class ImageTextModule(Protocol):
    """What a torch module must offer to sit behind :class:`EmbeddingModel`."""

    def encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def encode_text(self, **tokens: torch.Tensor) -> torch.Tensor: ...


Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]
ImageRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class ModelInfo:
    model_id: str  # stable hash of config + weights; indexes are keyed by it
    name: str
    kind: str  # "dual_encoder" | "hf_clip" | "hf_siglip"
    embed_dim: int  # width of the shared text/photo space
    visual_dim: int  # width of the photo-to-photo similarity vector
    path: str


class EmbeddingModel:
    """A loaded model: ``encode_images`` / ``encode_texts`` return L2-normalised float32 (N, D) arrays.

    ``encode_pixels`` takes already-preprocessed arrays so an indexing pipeline can decode in other threads.
    Besides the shared-space embedding, photos also get a *visual* vector (the image tower's pooled features for
    composed models, the embedding itself for CLIP/SigLIP) that photo-to-photo search can use.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        tokenize: Tokenizer,
        preprocess: PreprocessConfig,
        info: ModelInfo,
        device: torch.device,
    ):
        self.module = module.eval().to(device)
        self.tokenize = tokenize
        self.preprocess_config = preprocess
        self.preprocessor = ImagePreprocessor(preprocess)
        self.info = info
        self.device = device
        self.image_backend = "torch"
        self._image_runner: ImageRunner = self._torch_image_runner

    # -- identity -----------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    def __repr__(self) -> str:
        return f"EmbeddingModel({self.info.name!r}, id={self.model_id}, kind={self.info.kind}, device={self.device})"

    # -- photos -------------------------------------------------------------------------------------------
    def preprocess(self, image: ImageInput) -> np.ndarray:
        """Decode and preprocess one image → (3, H, W) float32. Raises ImageDecodeError."""
        return self.preprocessor(image)

    @torch.inference_mode()
    def _torch_image_runner(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
        emb, visual = self.module.encode_image(x)
        return emb.float().cpu().numpy(), visual.float().cpu().numpy()

    def set_image_runner(self, runner: ImageRunner, backend: str) -> None:
        """Replace the torch image path with an equivalent faster one (see ``photosearch.model.fastpath``)."""
        self._image_runner, self.image_backend = runner, backend

    def encode_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, H, W) preprocessed → (embeddings (N, D), visual (N, F)), both L2-normalised."""
        if len(pixels) == 0:
            return np.zeros((0, self.embed_dim), np.float32), np.zeros((0, self.info.visual_dim), np.float32)
        emb, visual = self._image_runner(pixels)
        return l2_normalize(emb), l2_normalize(visual)

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32, visual: bool = False) -> np.ndarray:
        """PIL images, paths or bytes → (N, D) float32, L2-normalised (``visual=True``: the visual vectors)."""
        out = []
        for chunk in _batches(list(images), batch_size):
            emb, vis = self.encode_pixels(np.stack([self.preprocess(im) for im in chunk]))
            out.append(vis if visual else emb)
        width = self.info.visual_dim if visual else self.embed_dim
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)

    # -- texts --------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Strings → (N, D) float32, L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not a single string")
        out = []
        for chunk in _batches(list(texts), batch_size):
            tokens = {k: v.to(self.device) for k, v in self.tokenize(list(chunk)).items()}
            out.append(l2_normalize(self.module.encode_text(**tokens).float().cpu().numpy()))
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)


def checkpoint_kind(path: Path) -> str:
    """Tell what kind of checkpoint a directory holds from its config.json, without loading weights."""
    from photosearch.model.config import read_json

    cfg = read_json(path / "config.json")
    if cfg.get("format") == "photosearch-checkpoint":
        return "dual_encoder"
    mt = cfg.get("model_type")
    if mt == "clip":
        return "hf_clip"
    if mt in ("siglip", "siglip2"):
        return "hf_siglip"
    return f"unknown:{mt}"
