"""embedcache: run a frozen network once over a dataset and keep its features in HDF5.

The pipeline, one module per step::

    sources/   images + label + sensitive attributes + split   (CelebA, CSV manifest, synthetic)
    backbones  frozen network + its preprocessing               (registry, torchvision, any nn.Module)
    extract    batched inference loop -> journal -> cache       (resumable, crash-safe)
    distributed  the same under torchrun: one shard per rank, merged by rank 0
    store/     the HDF5 format: schema, writer, reader, journal
    importer   an existing features table -> the same format

The whole pipeline (what ``fairhead extract --synthetic`` runs; every public name has a short
example of its own that runs, in the API reference docs/api.md)::

    import embedcache
    src = embedcache.SyntheticSource(3000, seed=0)
    bb = embedcache.build_backbone("efficientnet_lite0")
    embedcache.extract(src, bb, "demo.h5")
    with embedcache.open("demo.h5") as cache:
        train = cache.load("train")

``import embedcache`` imports torch but not torchvision (the builders import it
when called), and never cvxpy or the solvers.
"""

from __future__ import annotations

from embedcache.backbones import (
    DEFAULT_BACKBONE,
    Backbone,
    BackboneSpec,
    build_backbone,
    list_backbones,
    register_backbone,
)
from embedcache.errors import BackboneError, CacheError, DataError, FairheadError
from embedcache.extract import extract
from embedcache.importer import import_table
from embedcache.sources import CelebASource, ManifestSource, Source, SyntheticSource, write_synthetic_dataset
from embedcache.store.reader import Cache, CacheData, CountTable, open_cache
from embedcache.store.schema import FORMAT_VERSION

#: ``embedcache.open(path)`` is the reading entry point (it shadows the builtin only here)
open = open_cache  # noqa: A001

__all__ = [
    "open",
    "Cache",
    "CacheData",
    "CountTable",
    "extract",
    "import_table",
    "Backbone",
    "BackboneSpec",
    "build_backbone",
    "list_backbones",
    "register_backbone",
    "DEFAULT_BACKBONE",
    "Source",
    "CelebASource",
    "ManifestSource",
    "SyntheticSource",
    "write_synthetic_dataset",
    "FORMAT_VERSION",
    "FairheadError",
    "DataError",
    "CacheError",
    "BackboneError",
]
