"""photosearch: offline search of your own photo library by text or by example photo."""

__version__ = "0.1.0"

import os as _os
from pathlib import Path as _Path


def config_dir() -> _Path:
    """The per-user settings folder (window settings, the user's describe vocabulary); $PHOTOSEARCH_CONFIG
    overrides it."""
    if _os.environ.get("PHOTOSEARCH_CONFIG"):
        return _Path(_os.environ["PHOTOSEARCH_CONFIG"])
    from platformdirs import user_config_dir

    return _Path(user_config_dir("photosearch", appauthor=False))
