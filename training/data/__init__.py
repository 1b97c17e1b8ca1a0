"""Training data sources reachable offline: Debian packages (Tux Paint stamps, Fashion-MNIST) and easy-VQA."""

from training.data.captions import (
    FORMATS,
    CaptionData,
    CaptionedPhoto,
    ClassFolder,
    DatasetError,
    TrainPairs,
    detect_format,
    eval_lists,
    load_caption_data,
    load_class_folder,
)
from training.data.easy_vqa import load_easy_vqa_captions
from training.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, to_pil
from training.data.fetch import RESERVED_PACKAGES, DataFetchError, data_cache_dir, fetch_debian_package
from training.data.tuxpaint import CaptionedImage, load_rgb, load_tuxpaint, split_by_image

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FORMATS",
    "RESERVED_PACKAGES",
    "CaptionData",
    "CaptionedImage",
    "CaptionedPhoto",
    "ClassFolder",
    "DataFetchError",
    "DatasetError",
    "TrainPairs",
    "data_cache_dir",
    "detect_format",
    "eval_lists",
    "fetch_debian_package",
    "load_caption_data",
    "load_class_folder",
    "load_easy_vqa_captions",
    "load_fashion_mnist",
    "load_rgb",
    "load_tuxpaint",
    "split_by_image",
    "to_pil",
]
