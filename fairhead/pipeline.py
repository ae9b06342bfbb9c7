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
    return SplitArrays(
        X=np.asarray(data.features), y=np.asarray(data.labels), groups=groups, attributes=attributes,
        categories={a: tuple(cache.categories(a)) for a in attributes},
        sample_ids=np.asarray(data.sample_ids),
    )


def sensitive_arg(arrays: SplitArrays) -> np.ndarray:
    """The ``sensitive_features`` argument: 1-D for one attribute, (n, k) for intersectional groups."""
    return arrays.groups[:, 0] if arrays.groups.shape[1] == 1 else arrays.groups


# --------------------------------------------------------------------------- head -> metrics
def evaluate_head(head, arrays: SplitArrays, *, bounded: bool = False) -> dict[str, float]:
    """All scalar metrics of :func:`solvers.metrics.evaluate` for ``head`` on ``arrays``.

    ``bounded=True`` adds ``constraint_value``: the head's bounded gap on these rows, under
    its ``balance`` weights (:func:`fairhead.measure.constraint_value`).
    """
    from solvers import metrics

    out = metrics.evaluate(
        arrays.y, head.predict(arrays.X), sensitive_features=sensitive_arg(arrays),
        y_score=head.predict_proba(arrays.X)[:, 1],
    )
    if bounded and head.constraint not in (None, "none"):
        from fairhead.measure import constraint_value

        out["constraint_value"] = constraint_value(head.constraint, y=arrays.y, scores=head.decision_function(arrays.X),
                                                   sensitive_features=sensitive_arg(arrays), balance=head.balance)
    return out


#: the columns of every per-split table, in order (metric key, header)
METRIC_COLUMNS = (
    ("accuracy", "acc"),
    ("balanced_accuracy", "bal_acc"),
    ("roc_auc", "auc"),
    ("demographic_parity_difference", "dp_diff"),
    ("equalized_odds_difference", "eo_diff"),
    ("equal_opportunity_difference", "eopp_diff"),
    ("accuracy_equality_difference", "acc_eq_diff"),
    ("worst_group_accuracy", "mmf_acc"),
    ("worst_cell_accuracy", "worst_cell_acc"),
)


def _ci(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_low"), m.get(f"{key}_high")
    return "" if lo is None else f"[{lo:.3f}, {hi:.3f}]"


def metric_rows(per_split: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per split; ``acc_ci`` / ``eo_diff_ci`` are the intervals when the metrics carry them."""
    bounded = any("constraint_value" in m for m in per_split.values())
    with_ci = any("accuracy_low" in m for m in per_split.values())
    return [{"split": split, **({"bounded_gap": m.get("constraint_value", float("nan"))} if bounded else {}),
             **{h: m.get(k, float("nan")) for k, h in METRIC_COLUMNS},
             **({"acc_ci": _ci(m, "accuracy"), "eo_diff_ci": _ci(m, "equalized_odds_difference")} if with_ci else {})}
            for split, m in per_split.items()]


@dataclass
class FitResult:
    """One fitted head and its metrics on each evaluated split."""

    head: Any
    fit_split: str
    metrics: dict[str, dict[str, float]]
    saved_to: Path | None = None
    #: the fit split's metrics (bounded gap included), whether or not it is among the evaluated splits
    fit_metrics: dict[str, float] | None = None
    #: split -> rates undefined in some group there (counted as 0, as fairlearn)
    undefined_rates: dict[str, list[str]] | None = None

    def gap_lines(self) -> list[str]:
        """The bounded gap and the between-groups difference on the fit split, each labelled."""
        from fairhead.measure import BETWEEN_GROUPS, describe_bounded_gap

        cert = self.head.certificate_
        name = cert.constraint
        if name is None or self.fit_metrics is None:
            return []
        bounded = self.fit_metrics.get("constraint_value", float("nan"))
        lines = []
        if name == "minimax":
            lines.append(f"bounded gap on '{self.fit_split}': {bounded:.4f} (minimax: minimised, no eps)")
        else:
            met = cert.eps_met if cert.eps_met is not None else cert.max_violation <= max(cert.tol, 1e-9)
            lines.append(f"bounded gap on '{self.fit_split}': {bounded:.4f} (eps {cert.eps:g}; met: {met})")
        lines.append(f"  = {describe_bounded_gap(name, self.head.balance)}")
        key = BETWEEN_GROUPS[name]
        short = dict(METRIC_COLUMNS)[key]
        lines.append(f"between-groups difference on '{self.fit_split}': {short} {self.fit_metrics[key]:.4f} "
                     "(fairlearn's max - min over groups, unit weights; not the bounded quantity)")
        return lines

    def summary(self) -> str:
        cert = self.head.certificate_
        lines = [
            f"head: constraint={self.head.constraint or 'none'} eps={self.head.eps} C={self.head.C} "
            f"fit on '{self.fit_split}' with backend={cert.backend} in {cert.wall_time:.2f}s "
            f"({cert.n_iter} iterations, status {cert.status})",
            *self.gap_lines(),
        ]
        lines.append(format_table(metric_rows(self.metrics)))
        lines += [f"UNDEFINED on '{split}': {note}" for split, notes in (self.undefined_rates or {}).items()
                  for note in notes]
        if self.saved_to:
            lines.append(f"saved head to {self.saved_to}")
        return "\n".join(lines)


def fit_on_cache(cache_path: Path, *, fit_split: str = "train", eval_splits=None, attributes=None,
                 save: Path | None = None, confidence: float = 0.95, **head_params) -> FitResult:
    """Fit one :class:`solvers.FairLogisticRegression` on ``fit_split`` and evaluate it on ``eval_splits``.

    Every split's metrics carry ``confidence`` intervals (:func:`fairhead.uncertainty.interval_columns`).
    """
    import embedcache
    from solvers import FairLogisticRegression, metrics, save_head
    from solvers.intervals import check_confidence

    from fairhead.uncertainty import interval_columns

    confidence = check_confidence(confidence)
    with embedcache.open(cache_path) as cache:
        train = load_arrays(cache, fit_split, attributes)
        head = FairLogisticRegression(**head_params)
        head.fit(train.X, train.y, sensitive_features=sensitive_arg(train))
        splits = list(eval_splits) if eval_splits else list(cache.splits)
        per_split, undefined = {}, {}
        for split in splits:
            arrays = train if split == fit_split else load_arrays(cache, split, train.attributes)
            per_split[split] = evaluate_head(head, arrays, bounded=True)
            per_split[split].update(interval_columns(arrays.y, head.predict(arrays.X), sensitive_arg(arrays),
                                                     confidence))
            undefined[split] = metrics.undefined_rates(arrays.y, sensitive_features=arrays.group_names)
        fit_metrics = per_split.get(fit_split) or evaluate_head(head, train, bounded=True)
        fingerprint = cache.fingerprint
    if save is None:
        cache_path = Path(cache_path)
        save = cache_path.with_name(f"{cache_path.stem}.head-{head.constraint or 'none'}-{head.eps:g}.json")
    save_head(head, save, cache_fingerprint=fingerprint,
              extra={"fit_split": fit_split, "attributes": list(train.attributes), "cache": str(cache_path)})
    return FitResult(head=head, fit_split=fit_split, metrics=per_split, saved_to=Path(save), fit_metrics=fit_metrics,
                     undefined_rates={s: v for s, v in undefined.items() if v})
