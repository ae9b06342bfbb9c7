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
    import numpy as np

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
    # ONNX may write its weights to a sidecar named after the file, so it is written in place
    tmp = out if fmt == "onnx" else out.with_name(out.name + ".tmp")
    if fmt == "sklearn":
        import joblib

        joblib.dump(to_sklearn(head), tmp)
    elif fmt == "linear":
        torch.save(to_torch_linear(head).state_dict(), tmp)
    else:
        from fairhead.predict import head_backbone, rebuild_backbone

        backbone = rebuild_backbone(head_backbone(head, head_path), path=head_path, weights_file=weights_file)
        module = head_module(backbone, head)
        example = example_images(backbone)
        (export_program if fmt == "program" else export_onnx)(module, example, tmp)
    if tmp != out:
        tmp.replace(out)  # a failed export never leaves a half-written file under the final name
    return out


__all__ = ["FORMATS", "float32_score_tolerance", "head_module", "example_images", "export_program", "export_onnx", "export_head",
           "onnx_available"]
