"""Datasets the extractor reads: CelebA's folder layout, a CSV manifest, and the generated default."""

from embedcache.sources.base import Source, TableSource
from embedcache.sources.celeba import CelebASource
from embedcache.sources.manifest import ManifestSource
from embedcache.sources.synthetic import SyntheticSource, write_synthetic_dataset

__all__ = ["Source", "TableSource", "CelebASource", "ManifestSource", "SyntheticSource", "write_synthetic_dataset"]
