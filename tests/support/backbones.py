"""Weights files that ``build_backbone(..., weights_file=...)`` must refuse, one per kind of damage."""

from __future__ import annotations

import pickle

import pytest
import torch


class NotATensor:
    pass


def write_bad_weights(kind: str, path) -> None:
    """Write a weights file damaged in the way ``kind`` names to ``path``."""
    torchvision = pytest.importorskip("torchvision")
    if kind == "other-arch":
        torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    elif kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    elif kind == "not-state-dict":
        torch.save({"lr": 0.1, "epochs": 3}, path)
    elif kind == "unsafe-pickle":
        with open(path, "wb") as fh:
            pickle.dump({"fc.weight": NotATensor()}, fh)
    elif kind == "unsafe-torch-save":
        torch.save({"fc.weight": NotATensor()}, path)
    elif kind == "truncated":
        torch.save(torchvision.models.resnet18().state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])
