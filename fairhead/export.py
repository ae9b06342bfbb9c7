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

import copy
import importlib.util
import os
from pathlib import Path

from fairhead_errors import DataError

FORMATS = ("sklearn", "linear", "program", "onnx")
SUFFIXES = {"sklearn": ".joblib", "linear": ".pt", "program": ".pt2", "onnx": ".onnx"}
NO_ONNX_MSG = "ONNX export needs the onnx extra (onnx, onnxscript); install it with pip install \"fairhead[onnx]\""
UNKNOWN_FORMAT_MSG = "unknown export format {fmt!r}; choose one of: {known}"


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


def head_module(backbone, head):
    """One ``nn.Module``: preprocessed images -> the head's scores (N,), float64.

    The backbone runs in float32 as it did for the cache (channels_last input, as during
    extraction, so the features are bitwise the same); the head runs in float64 on those features.
    """
    import torch

    from solvers.export import to_torch_linear

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


def export_program(module, example, path) -> Path:
    """``torch.export`` the module with a dynamic batch dimension and save it (``.pt2``)."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, os.fspath(path))
    return Path(path)


def export_onnx(module, example, path) -> Path:
    """ONNX through ``torch.onnx.export`` (dynamo exporter), batch dimension dynamic."""
    import torch

    if not onnx_available():
        raise DataError(NO_ONNX_MSG)
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(module, (example,), os.fspath(path), input_names=["images"], output_names=["scores"],
                      dynamic_shapes=({0: batch},), dynamo=True)
    return Path(path)


def onnx_metadata(head, backbone_prov: dict) -> dict[str, str]:
    """``metadata_props`` of an exported ONNX model: strings a consumer reads without fairhead."""
    import json

    import fairhead

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


def add_onnx_metadata(path, metadata: dict[str, str]) -> None:
    """Write ``metadata`` into the ONNX file's ``metadata_props`` (its external weights untouched)."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, os.fspath(path))


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
    """Write the head of ``head_path`` as ``fmt`` (see the module table) to ``out``."""
    import torch

    from solvers import load_head
    from solvers.export import to_sklearn, to_torch_linear

    if fmt not in FORMATS:
        raise DataError(UNKNOWN_FORMAT_MSG.format(fmt=fmt, known=", ".join(FORMATS)))
    if fmt == "onnx" and not onnx_available():
        raise DataError(NO_ONNX_MSG)
    head = load_head(head_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # ONNX may write its weights to a sidecar named after the file, so it is written in place; the
    # others keep their suffix (torch.export.save warns about a file not ending in .pt2)
    tmp = out if fmt == "onnx" else out.with_name(f"{out.stem}.tmp{out.suffix}")
    if fmt == "sklearn":
        import joblib

        joblib.dump(to_sklearn(head), tmp)
    elif fmt == "linear":
        torch.save(to_torch_linear(head).state_dict(), tmp)
    else:
        from fairhead.predict import head_backbone, rebuild_backbone

        prov = head_backbone(head, head_path)
        backbone = rebuild_backbone(prov, path=head_path, weights_file=weights_file)
        module = head_module(backbone, head)
        example = example_images(backbone)
        (export_program if fmt == "program" else export_onnx)(module, example, tmp)
        if fmt == "onnx":
            add_onnx_metadata(tmp, onnx_metadata(head, prov))
    if tmp != out:
        tmp.replace(out)  # a failed export never leaves a half-written file under the final name
    return out


__all__ = ["FORMATS", "head_module", "example_images", "export_program", "export_onnx", "export_head",
           "onnx_available", "onnx_metadata", "add_onnx_metadata", "export_sidecars"]
