"""What every loaded model offers the app, without importing torch: batching, normalisation, preprocessing.

Subclasses provide two runners: ``_image_runner(pixels (N,3,H,W)) -> (embedding, visual)`` and
``_text_runner(texts) -> embedding`` (unnormalised numpy arrays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from photosearch.model.config import PreprocessConfig
from photosearch.model.preprocess import ImageInput, ImagePreprocessor
from photosearch.model.vectors import l2_normalize

ImageRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
TextRunner = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class ModelInfo:
    model_id: str  # stable hash of config + weights; indexes are keyed by it
    name: str
    kind: str  # "dual_encoder" | "hf_clip" | "hf_siglip"
    embed_dim: int  # width of the shared text/photo space
    visual_dim: int  # width of the photo-to-photo similarity vector
    path: str


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class EncoderBase:
    """``encode_images`` / ``encode_texts`` return L2-normalised float32 (N, D) arrays.

    ``encode_pixels`` takes already-preprocessed arrays so an indexing pipeline can decode in other threads.
    Besides the shared-space embedding, photos also get a *visual* vector (the image tower's pooled features for
    composed models, the embedding itself for CLIP/SigLIP) that photo-to-photo search can use.
    """

    image_backend = "torch"
    text_backend = "torch"

    def __init__(self, preprocess: PreprocessConfig, info: ModelInfo):
        self.preprocess_config = preprocess
        self.preprocessor = ImagePreprocessor(preprocess)
        self.info = info

    def _image_runner(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _text_runner(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.info.name!r}, id={self.model_id}, kind={self.info.kind}, "
                f"device={getattr(self, 'device', 'cpu')}, images={self.image_backend}, texts={self.text_backend})")

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """Decode and preprocess one image → (3, H, W) float32. Raises ImageDecodeError."""
        return self.preprocessor(image)

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

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Strings → (N, D) float32, L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not a single string")
        out = [l2_normalize(self._text_runner(list(chunk))) for chunk in _batches(list(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)
