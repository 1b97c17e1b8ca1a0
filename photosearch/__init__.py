"""photosearch: offline search of your own photo library by text or by example photo."""

__version__ = "0.1.0"
