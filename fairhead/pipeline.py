"""The glue between the two libraries: cache -> arrays -> fair head -> metrics.

This is the only place (with the other modules of this package) that imports
both :mod:`embedcache` and :mod:`solvers`. Every CLI subcommand is a call here,
so the same pipeline is available from Python::

    from fairhead import pipeline
    result = pipeline.fit_on_cache("celeba.h5", constraint="eo", eps=0.05)
    print(result.summary())
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fairhead_errors import DataError

from fairhead.tables import format_table

NO_SENSITIVE_MSG = "cache '{path}' has no sensitive attribute; a fair head needs at least one (re-extract with --sensitive)"
UNKNOWN_ATTRIBUTE_MSG = "sensitive attribute {name!r} is not in cache '{path}' (it has: {have}); pick one of those"
NONFINITE_FEATURES_MSG = ("split {split!r} of cache '{path}' has {n} row(s) with NaN or infinite features "
                          "(first: sample {first!r}); drop or impute those rows and rebuild the cache")
CELEBA_TARGET_DEFAULT = "Blond_Hair"
CELEBA_SENSITIVE_DEFAULT = ("Male",)


# --------------------------------------------------------------------------- sources -> cache
def source_from_args(args: argparse.Namespace):
    """Build the :mod:`embedcache` source named by the CLI's source options."""
    from embedcache import sources

    if args.preset:
        from fairhead import presets

        return presets.source_from_preset(args.preset, root=args.root, target=args.target,
                                          sensitive=args.sensitive)
    if args.celeba:
        return sources.CelebASource(
            args.celeba, target=args.target or CELEBA_TARGET_DEFAULT,
            sensitive=tuple(args.sensitive or CELEBA_SENSITIVE_DEFAULT),
        )
    if args.manifest:
        if not args.target or not args.sensitive:
            raise DataError("--manifest needs --target LABEL_COLUMN and --sensitive COLUMN [COLUMN ...]; add them")
        return sources.ManifestSource(
            args.manifest, root=args.root, image_col=args.image_col, label_col=args.target,
            sensitive_cols=tuple(args.sensitive), split_col=args.split_col, id_col=args.id_col,
        )
    return sources.SyntheticSource(
        args.n, seed=args.seed, correlation=args.correlation, minority_fraction=args.minority_fraction,
    )


def extract_cache(source, *, backbone: str, weights: str | None = None, weights_file: Path | None = None,
                  image_size: int | None = None, autocast: str = "auto", out: Path, **extract_options) -> Path:
    """Build the backbone by name and run one extraction pass of ``source`` into ``out``."""
    import embedcache

    model = embedcache.build_backbone(backbone, weights=weights, weights_file=weights_file, image_size=image_size)
    return embedcache.extract(source, model, out, autocast=None if autocast == "auto" else autocast, **extract_options)


def generate_dataset(out: Path, **synthetic_params) -> Path:
    """Write the generated default dataset as image files plus a CSV manifest; return the manifest."""
    from embedcache.sources import write_synthetic_dataset
    from embedcache.sources.synthetic import LABEL_NAME, SENSITIVE_NAME
    from fairhead_io import check_own_outputs, contains, ensure_output_folder, starts_with

    ensure_output_folder(out, flag="--out")  # a file or a read-only folder fails before any image is drawn
    # a manifest.csv or dataset.json that was not generated (a user's own dataset) is never replaced
    header = ",".join(["path", "id", LABEL_NAME, SENSITIVE_NAME, "split"]).encode()
    check_own_outputs(out, {"manifest.csv": starts_with(header), "dataset.json": contains(b'"generator"')},
                      flag="--out")
    return write_synthetic_dataset(out, **synthetic_params)


def import_features(table: Path, **options) -> Path:
    """Write a table of already-computed features into the cache format."""
    from embedcache import import_table

    return import_table(table, **options)


def describe_cache(path: Path) -> str:
    """Provenance and the split x label x group count table, as printed by ``fairhead info``."""
    import embedcache

    with embedcache.open(path) as cache:
        prov = cache.provenance
        width = max(map(len, prov), default=0) + 1
        lines = [f"{'cache':<{width}s} {Path(path)}", f"{'rows':<{width}s} {cache.n_rows} x {cache.feature_dim} features"]
        for key in sorted(prov):
            value = prov[key]
            if isinstance(value, (dict, list)):
                value = json.dumps(value, sort_keys=True)
            text = str(value)
            lines.append(f"{key:<{width}s} {text if len(text) <= 160 else text[:157] + '...'}")
        lines.append("")
        lines.append(str(cache.count_table()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- cache -> arrays
@dataclass
class SplitArrays:
    """Everything a head needs from one or more splits of a cache, as numpy arrays."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # (n, k) integer codes, one column per attribute
    attributes: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    sample_ids: np.ndarray

    @property
    def group_names(self) -> np.ndarray:
        """Readable intersectional group names per row, e.g. ``"Male=1,Young=0"``."""
        parts = [np.asarray(self.categories[a], dtype=object)[self.groups[:, j]]
                 for j, a in enumerate(self.attributes)]
        if len(parts) == 1:
            return parts[0].astype(str)
        return np.array([",".join(f"{a}={v}" for a, v in zip(self.attributes, row)) for row in zip(*parts)])


def resolve_attributes(cache, attributes) -> tuple[str, ...]:
    names = tuple(cache.sensitive_names)
    if not names:
        raise DataError(NO_SENSITIVE_MSG.format(path=cache.path))
    if not attributes:
        return names
    for name in attributes:
        if name not in names:
            raise DataError(UNKNOWN_ATTRIBUTE_MSG.format(name=name, path=cache.path, have=", ".join(names)))
    return tuple(attributes)


def load_arrays(cache, splits, attributes=None) -> SplitArrays:
    """Read one split (or several, concatenated) of an open cache into :class:`SplitArrays`."""
    attributes = resolve_attributes(cache, attributes)
    data = cache.load(splits, sensitive=list(attributes))
    groups = np.stack([np.asarray(data.sensitive[a]) for a in attributes], axis=1)
    X = np.asarray(data.features)
    check_finite_features(X, np.asarray(data.sample_ids), split=splits, path=cache.path)
    return SplitArrays(
        X=X, y=np.asarray(data.labels), groups=groups, attributes=attributes,
        categories={a: tuple(cache.categories(a)) for a in attributes},
        sample_ids=np.asarray(data.sample_ids),
    )


def check_finite_features(X: np.ndarray, sample_ids: np.ndarray, *, split, path) -> None:
    """Refuse NaN or infinite features in any split that is read (fit or evaluation), naming the rows:
    a head fitted on clean rows must not crash, or score silently, on damaged test rows."""
    bad = ~np.isfinite(X).all(axis=1)  # chunked by the cache's rows: one boolean per row
    if bad.any():
        first = np.flatnonzero(bad)[0]
        split_name = split if isinstance(split, str) else "+".join(map(str, split))
        raise DataError(NONFINITE_FEATURES_MSG.format(split=split_name, path=path, n=int(bad.sum()),
                                                      first=str(sample_ids[first])))


def sensitive_arg(arrays: SplitArrays) -> np.ndarray:
    """The ``sensitive_features`` argument: 1-D for one attribute, (n, k) for intersectional groups."""
    return arrays.groups[:, 0] if arrays.groups.shape[1] == 1 else arrays.groups


# --------------------------------------------------------------------------- head -> metrics
def evaluate_head(head, arrays: SplitArrays) -> dict[str, float]:
    """All scalar metrics of :func:`solvers.metrics.evaluate` for ``head`` on ``arrays``."""
    from solvers import metrics

    return metrics.evaluate(
        arrays.y, head.predict(arrays.X), sensitive_features=sensitive_arg(arrays),
        y_score=head.predict_proba(arrays.X)[:, 1],
    )


#: the columns of every per-split table, in order (metric key, header)
METRIC_COLUMNS = (
    ("accuracy", "acc"),
    ("balanced_accuracy", "bal_acc"),
    ("roc_auc", "auc"),
    ("demographic_parity_difference", "dp_diff"),
    ("equalized_odds_difference", "eo_diff"),
    ("equal_opportunity_difference", "eopp_diff"),
    ("accuracy_equality_difference", "acc_eq_diff"),
    ("worst_group_accuracy", "worst_cell_acc"),
)


def metric_rows(per_split: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    return [{"split": split, **{h: m.get(k, float("nan")) for k, h in METRIC_COLUMNS}}
            for split, m in per_split.items()]


@dataclass
class FitResult:
    """One fitted head and its metrics on each evaluated split."""

    head: Any
    fit_split: str
    metrics: dict[str, dict[str, float]]
    saved_to: Path | None = None

    def summary(self) -> str:
        cert = self.head.certificate_
        lines = [
            f"head: constraint={self.head.constraint or 'none'} eps={self.head.eps} C={self.head.C} "
            f"fit on '{self.fit_split}' with backend={cert.backend} in {cert.wall_time:.2f}s "
            f"({cert.n_iter} iterations, status {cert.status})",
        ]
        if getattr(cert, "achieved_gap", None) is not None:
            lines.append(f"rate gap on the fit split: {cert.achieved_gap:.4f} (eps met: {cert.eps_met})")
        lines.append(format_table(metric_rows(self.metrics)))
        if self.saved_to:
            lines.append(f"saved head to {self.saved_to}")
        return "\n".join(lines)


def fit_on_cache(cache_path: Path, *, fit_split: str = "train", eval_splits=None, attributes=None,
                 save: Path | None = None, **head_params) -> FitResult:
    """Fit one :class:`solvers.FairLogisticRegression` on ``fit_split`` and evaluate it on ``eval_splits``."""
    import embedcache
    from fairhead_io import check_file_target
    from solvers import FairLogisticRegression, save_head
    from solvers.persistence import check_head_path

    with embedcache.open(cache_path) as cache:
        if save is None:  # beside the cache, named by the constraint and the bound
            cache_path = Path(cache_path)
            name = head_params.get("constraint") or "none"
            name = getattr(name, "name", name)
            save = cache_path.with_name(f"{cache_path.stem}.head-{name}-{head_params.get('eps', 0.05):g}.json")
        # before the fit: a head that cannot be saved, or would replace another file, fails in a second
        check_head_path(save)
        check_file_target(save, flag="--save", fix="pass --save PATH in a writable folder")
        train = load_arrays(cache, fit_split, attributes)
        splits = list(eval_splits) if eval_splits else list(cache.splits)
        # every split is read (and checked) before the fit, so bad evaluation rows fail before the work
        evaluated = {split: train if split == fit_split else load_arrays(cache, split, train.attributes)
                     for split in splits}
        fingerprint = cache.fingerprint
    head = FairLogisticRegression(**head_params)
    head.fit(train.X, train.y, sensitive_features=sensitive_arg(train))
    per_split = {split: evaluate_head(head, arrays) for split, arrays in evaluated.items()}
    save_head(head, save, cache_fingerprint=fingerprint,
              extra={"fit_split": fit_split, "attributes": list(train.attributes), "cache": str(cache_path)})
    return FitResult(head=head, fit_split=fit_split, metrics=per_split, saved_to=Path(save))
