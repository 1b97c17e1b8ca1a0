"""The user's photo collection: folders, scanning, the SQLite store, the indexing pipeline. No Qt in here."""

from photosearch.library.library import IndexReport, Library, default_library_dir
from photosearch.library.pipeline import Control, Progress
from photosearch.library.store import Store, StoreError

__all__ = ["Control", "IndexReport", "Library", "Progress", "Store", "StoreError", "default_library_dir"]
