"""Specific errors raised by the inference core. Each message says what to do next."""

from __future__ import annotations


class ModelError(Exception):
    """Base class for every error raised while loading or running a model."""


class CheckpointNotFoundError(ModelError):
    """The checkpoint directory (or a file it names) does not exist."""


class CheckpointCorruptError(ModelError):
    """config.json or a weights file cannot be parsed, or tensors are missing or mis-shaped."""


class UnsupportedCheckpointError(ModelError):
    """The checkpoint is of a kind or a format version this photosearch cannot load."""


class WeightsHashMismatchError(ModelError):
    """A weights file's SHA-256 differs from the one recorded in the checkpoint."""


class BackboneUnavailableError(ModelError):
    """The pretrained backbone weights a checkpoint depends on are not installed."""


class ImageDecodeError(ModelError):
    """An image file or buffer cannot be decoded."""
