"""Approximate nearest-neighbour index of photo vectors (hnswlib), with exact search as reference."""

from photosearch.index.exact import exact_search, recall_at_k
from photosearch.index.hnsw import IndexCorruptError, RWLock, VectorIndex

__all__ = ["IndexCorruptError", "RWLock", "VectorIndex", "exact_search", "recall_at_k"]
