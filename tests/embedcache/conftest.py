"""Fixtures in real on-disk formats, built once per session under tmp_path_factory.

- a CelebA-style tree: JPEG files in img_align_celeba/, a real-format
  list_attr_celeba.txt (count line, 40 names, +1/-1 rows) and list_eval_partition.txt
- a manifest tree written by write_synthetic_dataset (JPEG files + CSV)
- real backbones: torchvision resnet18 (seeded random init) at 32 px, and the
  offline EfficientNet-Lite0
"""

from __future__ import annotations

from pathlib import Path

import pytest

import embedcache
from embedcache.sources.synthetic import write_synthetic_dataset
from support.celeba import write_celeba_tree

@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory) -> Path:
    return write_celeba_tree(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory) -> Path:
    """A written synthetic dataset (JPEG files + manifest.csv), 48 rows."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n=48, seed=3, image_size=32, image_format="jpeg")


@pytest.fixture(scope="session")
def resnet_small() -> "embedcache.Backbone":
    """torchvision resnet18 with seeded random weights, preprocessing at 32 px."""
    return embedcache.build_backbone("resnet18", image_size=32)


@pytest.fixture(scope="session")
def lite0() -> "embedcache.Backbone":
    return embedcache.build_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def small_source() -> "embedcache.SyntheticSource":
    return embedcache.SyntheticSource(60, seed=5, image_size=32)


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory, small_source, resnet_small) -> Path:
    """A real cache written by the real extractor (60 rows, resnet18 at 32 px)."""
    out = tmp_path_factory.mktemp("cache") / "small.h5"
    return embedcache.extract(small_source, resnet_small, out, batch_size=16, num_workers=0, progress=False)
