"""Apply a saved head to new images: the cache's backbone (checked by sha256), then the head.

A head file written by :func:`fairhead.pipeline.fit_on_cache` records the backbone its cache was
built with (``extra["backbone"]``: architecture, weights id, weights sha256, preprocessing,
feature node and width, stored dtype) and the label it predicts (``extra["label"]``). Prediction
rebuilds that backbone through :func:`embedcache.build_backbone`, refuses it unless every one of
those fields matches, computes the features of the new images, rounds them to the cache's stored
dtype (so a head fit on float16 features sees float16 features again), and applies the head::

    z = w . phi(image) + b,    p = sigmoid(z),    prediction = [z > 0]

>>> from fairhead import predict                                            # doctest: +SKIP
>>> result = predict.predict_images("celeba.head-eo-0.05.json", predict.ImageFolder("new/"))
>>> result.write_csv("preds.csv")
"""

from __future__ import annotations

import csv
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fairhead_errors import BackboneError, DataError
from fairhead_io import StagedFiles, atomic_open, atomic_write_text, by_signature, check_output_file, starts_with
from fairhead_options import check_batch_size, check_device
from solvers import load_head, metrics
from solvers.head import FairHead

from fairhead.evaluation import metric_rows
from fairhead.pipeline import backbone_provenance
from fairhead.provenance import strict_json
from fairhead.tables import format_table
from fairhead.uncertainty import interval_columns

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not need
# them does not pay for them.

#: image files ``ImageFolder`` picks up (lower-case suffixes)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: the backbone fields a head records and a rebuilt backbone must match (BackboneSpec names)
BACKBONE_FIELDS = ("arch", "weights", "weights_sha256", "preprocessing", "feature_node", "feature_dim")

MSG_NO_BACKBONE = (
    "head file '{path}' records no backbone (it was saved by an older fairhead or by solvers.save_head "
    "directly); refit it with `fairhead fit CACHE --save {path}` so it records the cache's backbone"
)
MSG_IMPORTED = (
    "head file '{path}' was fit on imported features ({what}), not on images; predict with "
    "solvers.load_head('{path}').decision_function(features) instead"
)
MSG_CUSTOM = (
    "head file '{path}' was fit on features of a custom module ({arch}); rebuild it with "
    "embedcache.Backbone.from_module and call fairhead.predict.predict_images(..., backbone=it)"
)
MSG_NEEDS_FILE = (
    "head file '{path}' was fit on {arch} features from a local weights file (sha256 {sha}); "
    "pass that file with --weights-file PATH"
)
MSG_MISMATCH = (
    "the backbone built for head '{path}' has {field} {got} but the head was fit on {expected}; "
    "{fix}"
)
SHA_FIX = "pass the weights file the cache was built with (--weights-file PATH)"
MSG_EMPTY_FOLDER = "image folder '{path}' has no image files ({suffixes}); point --images at a folder of images"
MSG_BROKEN_LINK = ("image {path!r} is a symbolic link to a file that does not exist{more}; restore its target "
                   "or remove the link")
MSG_NOT_A_FOLDER = "image folder '{path}' does not exist or is not a folder; pass an existing folder to --images"
MSG_NO_ROWS_IN_SPLIT = "no rows in split(s) {splits} of the new data (it has: {have}); pick one of those with --split"
MSG_NO_SPLITS = "--split {splits} needs images with a split (--celeba, or --manifest with --split-col); drop --split"
MSG_LABEL_MISMATCH = (
    "the new data's label {name!r} has categories {got} but the head was fit on {expected}; "
    "encode the label the same way (or pass --pos-label at fit time to pick the positive class)"
)


#: the stored feature dtypes a cache may have (embedcache's FEATURE_DTYPES plus float64 for imported tables)
FEATURE_DTYPES = ("float16", "float32", "float64")
MSG_DAMAGED_RECORD = "head file '{path}' is damaged: {why}; refit it with `fairhead fit CACHE --save {path}`"


def _check_backbone_record(prov, extra: dict, head, path) -> None:
    """The backbone and label fields a prediction depends on have the types ``fairhead fit`` writes."""
    def damaged(why):
        return DataError(MSG_DAMAGED_RECORD.format(path=path, why=why))

    if not isinstance(prov, dict):
        raise damaged(f"extra.backbone is {type(prov).__name__}, not a JSON object")
    for key in ("arch", "weights", "weights_sha256", "preprocessing", "feature_node"):
        if prov.get(key) is not None and not isinstance(prov[key], str):
            raise damaged(f"extra.backbone.{key} is {prov[key]!r}, not a string")
    if not prov.get("arch"):
        raise DataError(MSG_NO_BACKBONE.format(path=path))
    dim = prov.get("feature_dim")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim != head.n_features_in_):
        raise damaged(f"extra.backbone.feature_dim is {dim!r}, but the head has {head.n_features_in_} features")
    dtype = prov.get("feature_dtype", "float32")
    if dtype not in FEATURE_DTYPES:
        raise damaged(f"extra.backbone.feature_dtype is {dtype!r}, not one of {', '.join(FEATURE_DTYPES)}")
    label = extra.get("label", {})
    if not isinstance(label, dict):
        raise damaged(f"extra.label is {type(label).__name__}, not a JSON object")
    for key in ("class_names", "categories"):
        names = label.get(key)
        if names is not None and (not isinstance(names, list) or len(names) != len(head.classes_)
                                  or not all(isinstance(n, (str, int, float)) for n in names)):
            raise damaged(f"extra.label.{key} is {names!r}; the head has {len(head.classes_)} classes, one name each")


def head_backbone(head, path, *, custom_ok: bool = False) -> dict[str, Any]:
    """The backbone a loaded head records, or a one-line error saying why it cannot predict images
    (``custom_ok``: the caller brings a custom module's backbone itself)."""
    from embedcache.backbones import CUSTOM_WEIGHTS
    from embedcache.importer import IMPORTED_ARCH

    extra = getattr(head, "extra_", None) or {}
    prov = extra.get("backbone") if isinstance(extra, dict) else None
    if not prov:
        raise DataError(MSG_NO_BACKBONE.format(path=path))
    _check_backbone_record(prov, extra, head, path)
    if prov["arch"] == IMPORTED_ARCH:
        raise DataError(MSG_IMPORTED.format(path=path, what=prov.get("preprocessing")))
    if prov.get("weights") == CUSTOM_WEIGHTS and not custom_ok:
        raise DataError(MSG_CUSTOM.format(path=path, arch=prov["arch"]))
    return prov


def _crop_size(preprocessing: str | None) -> int | None:
    found = re.search(r"crop_size=\[(\d+)\]", preprocessing or "")
    return int(found.group(1)) if found else None


def rebuild_backbone(prov: dict[str, Any], *, path, weights_file=None):
    """Build the backbone ``prov`` describes and check it field by field (sha256 included)."""
    import embedcache
    from embedcache.backbones import FILE_WEIGHTS

    weights = prov.get("weights")
    if weights == FILE_WEIGHTS and weights_file is None:
        raise BackboneError(MSG_NEEDS_FILE.format(path=path, arch=prov["arch"], sha=str(prov.get("weights_sha256"))[:12]))
    # with a weights file, a torchvision name still picks that name's preprocessing
    name = None if weights == FILE_WEIGHTS else weights
    backbone = embedcache.build_backbone(prov["arch"], weights=name, weights_file=weights_file)
    crop = _crop_size(prov.get("preprocessing"))
    if backbone.spec.preprocessing != prov.get("preprocessing") and crop is not None:
        # the cache was built with --image-size: rebuild at that size
        backbone = embedcache.build_backbone(prov["arch"], weights=name, weights_file=weights_file, image_size=crop)
    check_backbone(backbone, prov, path=path, by_file=weights_file is not None)
    return backbone


def check_backbone(backbone, prov: dict[str, Any], *, path, by_file: bool = False) -> None:
    """Refuse a backbone whose architecture, weights sha256, preprocessing, feature node or width
    differ from what the head records (``by_file``: the weights id may differ, the sha256 decides)."""
    spec = backbone.spec.as_dict()
    for key in BACKBONE_FIELDS:
        if key == "weights" and (by_file or spec.get(key) == "custom"):
            continue  # the sha256 below is what identifies a file's weights
        expected, got = prov.get(key), spec.get(key)
        if key == "feature_dim":
            expected, got = int(expected), int(got)
        if expected != got:
            fix = SHA_FIX if key == "weights_sha256" else "predict with the backbone and weights the cache was built with"
            shown = (lambda v: repr(v)[:80])
            raise BackboneError(MSG_MISMATCH.format(path=path, field=key.replace("_", " "), got=shown(got),
                                                    expected=shown(expected), fix=fix))


# --------------------------------------------------------------------------- sources
class ImageFolder:
    """Every image file under a folder (recursively, sorted), without labels.

    Sample ids are the paths relative to the folder, with ``/`` separators.
    """

    def __init__(self, root) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(MSG_NOT_A_FOLDER.format(path=self.root))
        candidates = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        broken = [p for p in candidates if p.is_symlink() and not p.exists()]
        if broken:  # an image name pointing nowhere is a missing image, never silently one row fewer
            raise DataError(MSG_BROKEN_LINK.format(path=str(broken[0]), more=f" ({len(broken)} in all)" if len(broken) > 1
                                                   else ""))
        self.paths = [p for p in candidates if p.is_file()]
        if not self.paths:
            raise DataError(MSG_EMPTY_FOLDER.format(path=self.root, suffixes=" ".join(IMAGE_SUFFIXES)))
        self.ids = np.asarray([p.relative_to(self.root).as_posix() for p in self.paths], dtype=object)

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int, *, draft_size: int | None = None):
        from embedcache.sources.base import open_rgb

        return open_rgb(self.paths[i], where=f"image folder '{self.root}'", draft_size=draft_size)


class ImageRows:
    """Rows ``idx`` of a source, transformed (a map-style dataset for the DataLoader)."""

    def __init__(self, source, transform, idx: np.ndarray) -> None:
        from embedcache.backbones import draft_size_of

        self.source, self.transform, self.idx = source, transform, idx
        draft = draft_size_of(transform)
        accepts = "draft_size" in inspect.signature(source.load_image).parameters
        self.load_kwargs = {"draft_size": draft} if draft is not None and accepts else {}

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, k: int):
        return self.transform(self.source.load_image(int(self.idx[k]), **self.load_kwargs))


def compute_features(source, backbone, *, rows=None, batch_size: int = 64, device: str = "auto",
                     num_workers: int = 0, progress: bool = True) -> np.ndarray:
    """Penultimate features (n, D) float32 of ``source``'s images (all rows, or ``rows``)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm  # deferred: 40 ms that `fairhead --help` would pay

    idx = np.arange(len(source)) if rows is None else np.asarray(rows)
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                ("cpu" if device == "auto" else device))
    backbone.model.to(torch_device)
    loader = DataLoader(ImageRows(source, backbone.transform, idx), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    out = np.empty((len(idx), backbone.feature_dim), dtype=np.float32)
    start = 0
    with tqdm(total=len(idx), unit="img", desc=f"features {backbone.name}", disable=not progress,
              dynamic_ncols=True) as bar:
        for images in loader:
            feats = backbone.forward_features(images.to(torch_device))
            out[start:start + len(feats)] = feats.float().cpu().numpy()
            start += len(feats)
            bar.update(len(feats))
    return out


# --------------------------------------------------------------------------- prediction
@dataclass
class Predictions:
    """Scores, probabilities and predictions per sample id; labels and group metrics when known."""

    ids: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    predictions: np.ndarray  # 0/1: 1 = the head's positive class (K classes: the class code 0 .. K-1)
    class_names: tuple[str, ...] = ("0", "1")
    labels: np.ndarray | None = None
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # attribute -> category name per row
    splits: np.ndarray | None = None
    metrics: dict[str, Any] | None = None

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for k, sample_id in enumerate(self.ids):
            row = {"id": sample_id, "score": repr(float(self.scores[k])),
                   "probability": repr(float(self.probabilities[k])),
                   "prediction": int(self.predictions[k]),
                   "predicted_label": self.class_names[int(self.predictions[k])]}
            if self.labels is not None:
                row["label"] = self.class_names[int(self.labels[k])]
            for name, values in self.groups.items():
                row[name] = values[k]
            if self.splits is not None:
                row["split"] = self.splits[k]
            out.append(row)
        return out

    def write_csv(self, path, *, staged=None) -> Path:
        """One row per id: score (logit), probability of the positive class, 0/1 prediction, names.

        Written through a temporary file beside ``path`` (fsynced, renamed; removed on failure); with
        ``staged`` (a :class:`fairhead_io.StagedFiles`) it is replaced together with the other staged files.
        """
        path = Path(path)
        rows = self.rows()
        with (staged.open(path, "w", newline="") if staged is not None else atomic_open(path, "w", newline="")) as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    def summary(self) -> str:
        if len(self.class_names) > 2:
            shares = np.bincount(np.asarray(self.predictions, dtype=np.int64), minlength=len(self.class_names))
            shares = shares / max(len(self.predictions), 1)
            lines = [f"{len(self.ids)} images; predicted " + ", ".join(
                f"{name!r} {share:.1%}" for name, share in zip(self.class_names, shares))]
        else:
            positive = float(np.mean(self.predictions)) if len(self.predictions) else float("nan")
            lines = [f"{len(self.ids)} images; predicted {self.class_names[1]!r} for {positive:.1%}"]
        if self.metrics:
            lines.append(format_table(metric_rows(self.metrics)))
        return "\n".join(lines)


def _labelled_parts(source, head, attributes):
    """Labels (0/1 in the head's coding) and group names of a labelled source, checked against the head."""
    extra = getattr(head, "extra_", None) or {}
    label = extra.get("label") or {}
    labels = np.asarray(source.labels, dtype=np.int64)
    expected = label.get("categories")
    got = list(source.label_categories)
    if expected is not None and sorted(expected) != sorted(got):
        raise DataError(MSG_LABEL_MISMATCH.format(name=source.label_name, got=got, expected=list(expected)))
    positive = label.get("positive")
    if expected is not None and len(expected) > 2:  # a K-class head: class k is the head's category k
        labels = np.asarray([list(expected).index(got[c]) for c in range(len(got))], dtype=np.int64)[labels]
    elif positive is not None and positive in got and got.index(positive) == 0:
        labels = 1 - labels  # the head was fit with the first category as the positive class
    groups = {}
    for name in attributes:
        if name in source.sensitive:
            codes, categories = source.sensitive[name]
            groups[name] = np.asarray(categories, dtype=object)[codes]
    return labels, groups


def predict_images(head_path, source, *, backbone=None, weights_file=None, splits=None, batch_size: int = 64,
                   device: str = "auto", num_workers: int = 0, progress: bool = True) -> Predictions:
    """Run the head's backbone and the head on ``source``'s images.

    Parameters
    ----------
    head_path : path
        A head saved by ``fairhead fit`` (it records the cache's backbone).
    source : embedcache source or ImageFolder
        Labelled sources (CelebA, manifest) add labels, groups and group metrics.
    backbone : embedcache.Backbone, optional
        Use this backbone instead of rebuilding the recorded one; it is checked the same way.
    weights_file : path, optional
        The weights file the cache was built from, when the head records one (checked by sha256).
    splits : list of str, optional
        Only these splits of a labelled source (default: every row).
    """
    batch_size = check_batch_size(batch_size, flag="--batch-size")
    device = check_device(device, flag="--device")
    if splits and (getattr(source, "columns", None) or {}).get("split", "") is None:
        raise DataError(MSG_HASHED_SPLITS.format(splits=" ".join(splits)))
    head = load_head(head_path, head_type=FairHead)
    prov = head_backbone(head, head_path, custom_ok=backbone is not None)
    if backbone is None:
        backbone = rebuild_backbone(prov, path=head_path, weights_file=weights_file)
    else:
        check_backbone(backbone, prov, path=head_path, by_file=True)
    source_splits = getattr(source, "splits", None)
    rows = _rows_of_splits(source_splits, splits)
    features = compute_features(source, backbone, rows=rows, batch_size=batch_size, device=device,
                                num_workers=num_workers, progress=progress)
    stored = prov.get("feature_dtype", "float32")
    X = features.astype(stored).astype(np.float64)  # the precision the head was fit on
    scores, proba, proba_all, pred = _head_outputs(head, X)
    take = (lambda a: np.asarray(a) if rows is None else np.asarray(a)[rows])
    extra = getattr(head, "extra_", None) or {}
    label = extra.get("label") or {}
    class_names = tuple(str(c) for c in label.get("class_names", label.get("categories") or ("0", "1")))
    result = Predictions(ids=take(source.ids), scores=scores, probabilities=proba, predictions=pred,
                         class_names=class_names)
    if getattr(source, "labels", None) is not None:
        attributes = extra.get("attributes") or list(getattr(source, "sensitive", {}))
        labels, groups = _labelled_parts(source, head, attributes)
        result.labels = take(labels)
        result.groups = {name: take(values) for name, values in groups.items()}
        result.splits = take(source_splits) if source_splits is not None else None
        if result.groups:
            classes = np.arange(len(head.classes_)) if len(head.classes_) > 2 else None
            result.metrics = _group_metrics(result, proba_all, classes)
    return result


def _rows_of_splits(source_splits, splits) -> np.ndarray | None:
    """The source's rows in ``splits`` (``None``: every row), refusing splits it does not have."""
    if splits and source_splits is None:
        raise DataError(MSG_NO_SPLITS.format(splits=" ".join(splits)))
    if not splits:
        return None
    rows = np.flatnonzero(np.isin(np.asarray(source_splits, dtype=str), list(splits)))
    if not len(rows):
        have = ", ".join(sorted(set(map(str, source_splits))))
        raise DataError(MSG_NO_ROWS_IN_SPLIT.format(splits=", ".join(splits), have=have))
    return rows


def _head_outputs(head, X: np.ndarray):
    """``(scores, probabilities, all probabilities, predictions)`` of ``head`` on ``X``: for a K-class
    head the predicted class, its logit and its probability (all probabilities: every class's)."""
    scores = head.decision_function(X)
    if scores.ndim == 2:
        pred = np.argmax(scores, axis=1)
        proba_k = head.predict_proba(X)
        proba_all, proba = proba_k, proba_k[np.arange(len(pred)), pred]
        scores = scores[np.arange(len(pred)), pred]
    else:
        proba = proba_all = head.predict_proba(X)[:, 1]
        pred = (scores > 0).astype(np.int64)
    return scores, proba, proba_all, pred


def _group_metrics(result: Predictions, proba_all: np.ndarray, classes) -> dict[str, dict]:
    """The metrics with their 0.95 intervals (accuracy, the gaps, worst group) on every labelled row
    (``all``) and on each split that has two groups."""
    # one readable name per row, "attr=value[,attr=value]", as the fit named the groups
    sensitive = np.asarray([",".join(f"{a}={v}" for a, v in zip(result.groups, row))
                            for row in zip(*result.groups.values())], dtype=object)
    pred = result.predictions

    def measured(rows):
        values = metrics.evaluate(result.labels[rows], pred[rows], sensitive_features=sensitive[rows],
                                  y_score=proba_all[rows], classes=classes)
        values.update(interval_columns(result.labels[rows], pred[rows], sensitive[rows], 0.95, classes=classes))
        return values

    out = {"all": measured(np.ones(len(pred), dtype=bool))}
    if result.splits is not None and len(set(result.splits)) > 1:
        for split in sorted(set(result.splits)):
            m = np.asarray(result.splits == split)
            if len(set(sensitive[m])) > 1:  # group metrics need two groups in the split
                out[split] = measured(m)
    return out


def write_metrics(result: Predictions, path, *, staged=None) -> Path | None:
    """The group metrics as strict JSON next to the predictions (only when labels were known), atomically."""
    if not result.metrics:
        return None

    path = Path(path)
    text = json.dumps(strict_json(result.metrics), indent=1, allow_nan=False)
    (staged.write_text if staged is not None else atomic_write_text)(path, text)
    return path


MSG_HASHED_SPLITS = ("--split {splits} needs the manifest's own split column: without --split-col its rows get "
                     "hashed splits, which are not the manifest's train/valid/test; pass --split-col COLUMN")

#: what ``fairhead predict`` writes; an existing file is replaced only when it is one of these
PREDICTIONS_KIND = by_signature("a predictions table", starts_with(b"id,score,probability,prediction,"))
METRICS_KIND = by_signature("a predictions' metrics file", lambda h: h.lstrip().startswith(b"{") and (
    b'"all"' in h and b'"accuracy"' in h and b'"fairhead-head"' not in h))


def metrics_path(out) -> Path:
    """Where the metrics of the predictions ``out`` go: ``preds.csv`` -> ``preds.metrics.json``."""
    return Path(out).with_suffix(".metrics.json")


def check_prediction_targets(out, *, inputs: dict | None = None) -> tuple[Path, Path]:
    """The output policy before any image is read: ``out`` and its metrics file may be written
    (never a folder, the head, the manifest, a cache or a user's own CSV or JSON)."""
    out = check_output_file(out, PREDICTIONS_KIND, flag="--out", inputs=inputs)
    metrics = metrics_path(out)
    check_output_file(metrics, METRICS_KIND, flag="--out's metrics file", inputs=inputs)
    return out, metrics


def write_predictions(result: Predictions, out) -> tuple[Path, Path | None]:
    """The table and its metrics, replaced together (a kill leaves the old pair or the new one)."""
    out = Path(out)
    with StagedFiles() as staged:
        result.write_csv(out, staged=staged)
        written = write_metrics(result, metrics_path(out), staged=staged)
    return out, written


__all__ = ["ImageFolder", "ImageRows", "Predictions", "predict_images", "rebuild_backbone", "backbone_provenance",
           "compute_features", "write_metrics", "write_predictions",
           "check_prediction_targets", "metrics_path"]
