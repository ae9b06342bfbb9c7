"""Export a head, alone or with its backbone, to files other tools load.

=============  ==========================================================  =======================
``--to``       what                                                         file
=============  ==========================================================  =======================
``sklearn``    a fitted ``sklearn.linear_model.LogisticRegression``         ``.joblib`` (joblib)
``linear``     ``torch.nn.Linear(d, 1)`` (float64) state_dict               ``.pt`` (weights only)
``program``    backbone + head as one module, ``torch.export``'d            ``.pt2``
``onnx``       backbone + head, ONNX (needs the ``onnx`` extra)             ``.onnx``
=============  ==========================================================  =======================

The head-only exports live in :mod:`solvers.export`; this module adds the backbone (so it knows
:mod:`embedcache`). The full models map preprocessed images ``(N, 3, H, W)`` (the backbone's own
transform, recorded in the head file) to the head's scores ``z`` (N,), float64; the probability of
the positive class is ``sigmoid(z)``. A K-class head exports ``Linear(d, K)`` and scores (N, K), whose
softmax is the class probabilities.

The ONNX file carries what a consumer needs besides the graph in its ``metadata_props``
(:func:`onnx_metadata`: the preprocessing, the class names and which one is positive, what the
output means, the constraint and eps, the fairhead version); its weights may go to a sidecar
``<name>.data`` beside it (torch's exporter does so for large models), which
:func:`export_sidecars` lists and ``fairhead export`` names.

TorchScript is not offered: ``torch.jit.trace`` is deprecated in the torch this project uses,
and ``torch.export`` is its replacement.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fairhead_errors import DataError
from fairhead_io import (OutputKind, atomic_open, atomic_write_bytes, check_output_file, first_bytes, naming_the_file,
                         temp_prefix)
from solvers import load_head
from solvers.export import to_sklearn, to_torch_linear
from solvers.head import FairHead

import fairhead
from fairhead.predict import head_backbone, rebuild_backbone

FORMATS = ("sklearn", "linear", "program", "onnx")
SUFFIXES = {"sklearn": ".joblib", "linear": ".pt", "program": ".pt2", "onnx": ".onnx"}
MSG_NO_ONNX = "ONNX export needs the onnx extra (onnx, onnxscript); install it with pip install \"fairhead[onnx]\""
MSG_UNKNOWN_FORMAT = "unknown export format {fmt!r}; choose one of: {known}"


#: float32's machine epsilon (the gap between 1 and the next float32)
FLOAT32_EPS = 2.0 ** -23


def float32_score_tolerance(coef, features):
    r"""How far a head's scores may move when the same float32 backbone runs with other kernels.

    Another batch size, another CPU or onnxruntime instead of torch sums the same convolutions in
    another order, so the features move by rounding: :math:`\|\Delta x\|_2 \le
    2^{-23} \sqrt{D} \, \|x\|_2` (float32's epsilon times the growth of a sum of ``D``
    rounding errors of random sign; measured: about 8 epsilons on resnet18 at 32 px, ``D`` = 512,
    against the bound's 22.6). The score :math:`z = w \cdot x + b` then moves by at most
    :math:`\|w\|_2 \|\Delta x\|_2` (Cauchy-Schwarz; the float64 head adds nothing
    measurable). Returns that bound per row, the largest over a K-class head's rows of ``coef``.

    >>> import numpy as np
    >>> float(float32_score_tolerance(np.array([[3.0, 4.0]]), np.array([[1.0, 0.0]]))[0]) == 5 * 2**-23 * 2**0.5
    True
    """
    W = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    X = np.atleast_2d(np.asarray(features, dtype=np.float64))
    feature_norm = np.linalg.norm(X, axis=1)
    return FLOAT32_EPS * np.sqrt(X.shape[1]) * np.linalg.norm(W, axis=1).max() * feature_norm


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


def head_module(backbone, head):
    """One ``nn.Module``: preprocessed images -> the head's scores (N,), float64.

    The backbone runs in float32 as it did for the cache (channels_last input, as during
    extraction, so the features are bitwise the same); the head runs in float64 on those features.
    """
    import torch

    class HeadModel(torch.nn.Module):
        """``z = head(backbone(images))``; ``sigmoid(z)`` is P(positive class)."""

        def __init__(self, features: torch.nn.Module, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.features = features
            self.head = linear

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            feats = self.features(images.contiguous(memory_format=torch.channels_last))
            return self.head(feats.to(torch.float64)).squeeze(-1)

    # a contiguous copy: torch.export saves channels_last parameters only with a warning
    features = copy.deepcopy(backbone.model).to(memory_format=torch.contiguous_format).cpu()
    return HeadModel(features, to_torch_linear(head)).eval().requires_grad_(False)


def example_images(backbone, n: int = 2):
    """A batch of ``n`` blank images through the backbone's own transform (the model's input shape)."""
    import torch
    from PIL import Image

    image = backbone.transform(Image.new("RGB", (256, 256), (128, 128, 128)))
    return torch.stack([image] * n)


def _zip_names(path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def _is_linear_state(path) -> bool:
    """A ``torch.save``'d state_dict of exactly a weight and a bias (what ``--to linear`` writes)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl")]
        tensors = [n for n in names if "/data/" in n and n.rsplit("/", 1)[-1].isdigit()]
        if len(pickles) != 1 or len(tensors) != 2 or archive.getinfo(pickles[0]).file_size > 4096:
            return False
        text = archive.read(pickles[0])
    return b"weight" in text and b"bias" in text


#: the output kinds of ``fairhead export``: an existing file is replaced only when it is one of these
OUTPUT_KINDS = {
    "sklearn": OutputKind("a scikit-learn export (.joblib)", lambda p: (
        lambda h: h.startswith(b"\x80") and b"sklearn.linear_model" in h and b"LogisticRegression" in h)(first_bytes(p))),
    "linear": OutputKind("a torch.nn.Linear state_dict export", _is_linear_state),
    "program": OutputKind("a torch.export program (.pt2)", lambda p: "archive/archive_format" in _zip_names(p)),
    "onnx": OutputKind("an ONNX model exported from torch", lambda p: (
        lambda h: h.startswith(b"\x08") and b"pytorch" in h[:64] and b"images" in h)(first_bytes(p))),
}
#: largest ONNX model written as one self-contained file (protobuf's limit is 2 GiB); larger models keep
#: their weights in a sidecar named after the file and the weights' hash (``model.onnx.<sha12>.data``)
ONNX_INLINE_LIMIT = 2**31 - 2**24


def export_program(module, example, path) -> Path:
    """``torch.export`` the module with a dynamic batch dimension and save it (``.pt2``), atomically."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    with atomic_open(path, "wb") as fh:  # a full disk is an OSError here, never an abort inside torch
        torch.export.save(program, fh)
    return Path(path)


def export_onnx(module, example, path, metadata: dict[str, str] | None = None) -> Path:
    """ONNX through ``torch.onnx.export`` (dynamo exporter), batch dimension dynamic, with
    ``metadata`` (:func:`onnx_metadata`) in its ``metadata_props``.

    The model is written whole or not at all: as one self-contained file through a temporary file
    (below :data:`ONNX_INLINE_LIMIT`), or, for larger models, its weights first to a new sidecar named
    by their hash, then the model file renamed over the old one, then the old model's own sidecar
    removed. A kill at any moment leaves the old model with its weights, or the new one with its own.
    """
    import torch

    if not onnx_available():
        raise DataError(MSG_NO_ONNX)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(module, (example,), None, input_names=["images"], output_names=["scores"],
                                dynamic_shapes=({0: batch},), dynamo=True)
    path = Path(path)
    old_sidecars = _onnx_sidecars(path)
    proto = program.model_proto
    if proto.ByteSize() <= ONNX_INLINE_LIMIT:
        _set_metadata(proto, metadata)
        atomic_write_bytes(path, proto.SerializeToString())
    else:
        _write_onnx_with_sidecar(program, path, metadata)
    for sidecar in old_sidecars - _onnx_sidecars(path):
        with contextlib.suppress(OSError):
            (path.parent / sidecar).unlink()
    return path


def _onnx_sidecars(path: Path) -> set[str]:
    """The external-data files beside it that an existing ONNX model at ``path`` names, if any (only
    files named after it: a model pointing elsewhere never gets another file removed)."""
    if not OUTPUT_KINDS["onnx"].is_own(path):
        return set()
    try:
        files = export_sidecars(path)
    except Exception:  # noqa: BLE001 - a damaged old model has no sidecar we may remove
        return set()
    return {p.name for p in files if p.parent == path.parent and p.name.startswith(path.name)}


def _set_metadata(model, metadata: dict[str, str] | None) -> None:
    """Replace the model's ``metadata_props`` with ``metadata`` (before it is written)."""
    if metadata is not None:
        import onnx

        del model.metadata_props[:]
        onnx.helper.set_model_props(model, metadata)


def _write_onnx_with_sidecar(program, path: Path, metadata: dict[str, str] | None = None) -> None:
    import onnx

    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp"))
    try:
        program.save(os.fspath(staging / path.name), external_data=True)
        model = onnx.load(os.fspath(staging / path.name), load_external_data=False)
        data = staging / f"{path.name}.data"
        digest = hashlib.sha256()
        with open(data, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
        sidecar = f"{path.name}.{digest.hexdigest()[:12]}.data"
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = sidecar
        _set_metadata(model, metadata)
        with naming_the_file(path):
            with open(data, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(data, path.parent / sidecar)  # a new name: the old model's weights stay untouched
            atomic_write_bytes(path, model.SerializeToString())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_export_target(out, fmt: str, *, head_path=None, weights_file=None) -> Path:
    """The output policy before any work: ``out`` may be replaced by a ``fmt`` export (see
    :func:`fairhead_io.check_output_file`)."""
    if fmt not in FORMATS:
        raise DataError(MSG_UNKNOWN_FORMAT.format(fmt=fmt, known=", ".join(FORMATS)))
    return check_output_file(out, OUTPUT_KINDS[fmt], flag="--out",
                             inputs={"the --head file": head_path, "the --weights-file": weights_file})


def onnx_metadata(head, backbone_prov: dict) -> dict[str, str]:
    """``metadata_props`` of an exported ONNX model: strings a consumer reads without fairhead."""
    extra = getattr(head, "extra_", None) or {}
    label = extra.get("label") or {}
    classes = [str(c) for c in (label.get("class_names") or getattr(head, "classes_", []))]
    binary = len(classes) <= 2
    return {
        "fairhead.version": fairhead.__version__,
        "fairhead.input": "images (N, 3, H, W) float32 after fairhead.preprocessing",
        "fairhead.preprocessing": str(backbone_prov.get("preprocessing") or ""),
        "fairhead.backbone": f"{backbone_prov.get('arch')} {backbone_prov.get('weights')}",
        "fairhead.output": ("scores (N,) float64: the logit z; sigmoid(z) = P(fairhead.positive_class)" if binary
                            else "scores (N, K) float64: softmax gives P(class k), k in fairhead.class_names"),
        "fairhead.class_names": json.dumps(classes),
        "fairhead.positive_class": str(label.get("positive") or (classes[-1] if binary and classes else "")),
        "fairhead.label": str(label.get("name") or ""),
        "fairhead.constraint": str(getattr(head, "constraint", None) or "none"),
        "fairhead.eps": f"{getattr(head, 'eps', float('nan')):g}",
    }


def export_sidecars(path) -> list[Path]:
    """The external-data files an ONNX model at ``path`` reads (empty for a self-contained file)."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    names = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return [Path(path).parent / name for name in sorted(names)]


def export_head(head_path, out, *, fmt: str, weights_file=None) -> Path:
    """Write the head of ``head_path`` as ``fmt`` (see the module table) to ``out``.

    ``out`` is checked before any work (:func:`check_export_target`: never a folder, the head, the
    weights, a cache or any file that is not an export of this format) and written atomically.
    """
    import torch

    out = check_export_target(out, fmt, head_path=head_path, weights_file=weights_file)
    if fmt == "onnx" and not onnx_available():
        raise DataError(MSG_NO_ONNX)
    head = load_head(head_path, head_type=FairHead)
    if fmt == "sklearn":
        import joblib

        with atomic_open(out, "wb") as fh:
            joblib.dump(to_sklearn(head), fh)
    elif fmt == "linear":
        with atomic_open(out, "wb") as fh:
            torch.save(to_torch_linear(head).state_dict(), fh)
    else:
        prov = head_backbone(head, head_path)
        backbone = rebuild_backbone(prov, path=head_path, weights_file=weights_file)
        module = head_module(backbone, head)
        example = example_images(backbone)
        if fmt == "program":
            export_program(module, example, out)
        else:
            export_onnx(module, example, out, metadata=onnx_metadata(head, prov))
    return out


__all__ = ["FORMATS", "float32_score_tolerance", "head_module", "example_images", "export_program", "export_onnx",
           "export_head", "onnx_available", "onnx_metadata", "export_sidecars", "check_export_target", "OUTPUT_KINDS"]
