"""Batched feature extraction with a persistent on-disk cache keyed by content hashes.

One encoding pass feeds every scorer: :func:`encode_images` and :func:`encode_texts` return float32
numpy arrays and store them in a :class:`FeatureCache` per model fingerprint.
"""

from sayno.features.cache import FeatureCache, default_cache_root, sha1_bytes, sha1_file, sha1_text
from sayno.features.encode import ImageFeatures, cache_namespace, encode_images, encode_texts

__all__ = [
    "FeatureCache",
    "ImageFeatures",
    "cache_namespace",
    "default_cache_root",
    "encode_images",
    "encode_texts",
    "sha1_bytes",
    "sha1_file",
    "sha1_text",
]
