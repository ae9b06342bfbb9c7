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
import dataclasses
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fairhead_errors import DataError
from fairhead_io import check_file_target, check_own_outputs, contains, ensure_output_folder, starts_with
from solvers import metrics
from solvers.constraints import CONSTRAINTS
from solvers.intervals import check_confidence
from solvers.out_of_core import RowChunks
from solvers.head import FairHead, labels_from_scores
from solvers.persistence import check_head_path, save_head
from solvers.problem import encoded_groups

from fairhead import presets, provenance
from fairhead.data_parallel import shard_features
# evaluating a head is fairhead.evaluation's; these names stay importable from here
from fairhead.evaluation import METRIC_COLUMNS, evaluate_head, evaluate_head_scores, metric_rows, sensitive_arg  # noqa: F401
from fairhead.measure import BETWEEN_GROUPS, describe_bounded_gap
from fairhead.progress_bar import progress_bar, ticking
from fairhead.tables import format_table
from fairhead.uncertainty import interval_columns

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not
# need it does not pay for it. Heads are solvers.FairHead: scikit-learn (about 1 s, with scipy.stats and
# pandas) is never imported on a command's path.

#: the largest float64 copy of a split that :attr:`SplitArrays.scoring_X` makes (larger splits are
#: converted block by block in each product, as the solvers do)
SCORING_COPY_MAX_BYTES = 256 * 2**20
MSG_NO_SENSITIVE = "cache '{path}' has no sensitive attribute; a fair head needs at least one (re-extract with --sensitive)"
MSG_UNKNOWN_ATTRIBUTE = "sensitive attribute {name!r} is not in cache '{path}' (it has: {have}); pick one of those"
MSG_NONFINITE_FEATURES = ("split {split!r} of cache '{path}' has {n} row(s) with NaN or infinite features "
                          "(first: sample {first!r}); drop or impute those rows and rebuild the cache")
RANDOM_WEIGHTS_WARNING = (
    "fairhead: warning: {arch} runs with RANDOM weights (no --weights given), so its features are not "
    "pretrained; pass --weights NAME (e.g. DEFAULT) or --weights-file PATH, or --weights none to silence this"
)
MSG_UNKNOWN_POS_LABEL = "--pos-label {value!r} is not a class of label {name!r} in cache '{path}' (it has: {have}); pick one of those"
MSG_POS_LABEL_MULTICLASS = (
    "--pos-label picks the positive class of a binary label, but label {name!r} in cache '{path}' has {k} classes "
    "(fitted as one multinomial head, fairness per class); drop --pos-label"
)
MSG_MISSING_CLASS = (
    "the {split!r} rows have no row of class(es) {missing} of label {name!r} ({k} classes); a {k}-class head "
    "needs every class in its fit rows: fit on another split, or merge those classes when building the cache"
)
CELEBA_TARGET_DEFAULT = "Blond_Hair"
CELEBA_SENSITIVE_DEFAULT = ("Male",)


# --------------------------------------------------------------------------- sources -> cache
def source_from_args(args: argparse.Namespace):
    """Build the :mod:`embedcache` source named by the CLI's source options."""
    from embedcache import sources  # deferred here and below: embedcache imports torch (1-2 s)

    if args.preset:
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
                  image_size: int | None = None, autocast: str = "auto", out: Path, **extract_options) -> Path | None:
    """Build the backbone by name and run one extraction pass of ``source`` into ``out``.

    Under ``torchrun`` every rank extracts its shard and rank 0 merges them
    (:mod:`embedcache.distributed`); ranks other than 0 return None, since
    the finished cache is rank 0's to report.
    """
    import embedcache
    from embedcache.backbones import RANDOM_WEIGHTS
    from embedcache.distributed import launch_from_env

    launch = launch_from_env()
    model = embedcache.build_backbone(backbone, weights=weights, weights_file=weights_file, image_size=image_size)
    if model.spec.weights == RANDOM_WEIGHTS and weights is None and (launch is None or launch.rank == 0):
        # random features are rarely what a user wants; say so loudly but let it run (tests, smoke runs)
        print(RANDOM_WEIGHTS_WARNING.format(arch=backbone), file=sys.stderr, flush=True)
    path = embedcache.extract(source, model, out, autocast=None if autocast == "auto" else autocast, **extract_options)
    return path if launch is None or launch.rank == 0 else None


def generate_dataset(out: Path, **synthetic_params) -> Path:
    """Write the generated default dataset as image files plus a CSV manifest; return the manifest."""
    from embedcache.sources import write_synthetic_dataset
    from embedcache.sources.synthetic import LABEL_NAME, SENSITIVE_NAME

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


#: ``fairhead info`` lists at most this many groups per split (the largest), unless --all-groups
INFO_MAX_GROUPS = 30


def format_counts(table, *, max_groups: int | None = INFO_MAX_GROUPS) -> str:
    """The split x group x label counts, one line per non-empty group (at most ``max_groups`` per
    split, the largest first, then one line counting the rest): a continuous column given as
    sensitive would otherwise print one row per value and split, mostly zeros."""
    counts = np.asarray(table.counts)
    heads = [f"{table.label_name}={c}" for c in table.label_categories] + ["total"]
    body = []
    for i, split in enumerate(table.splits):
        sizes = counts[i].sum(axis=1)
        present = np.flatnonzero(sizes > 0)
        keep = set(present.tolist())
        if max_groups is not None and len(present) > max_groups:
            keep = set(present[np.argsort(-sizes[present], kind="stable")[:max_groups]].tolist())
        shown = [j for j in present if j in keep]
        rest = [j for j in present if j not in keep]
        for k, j in enumerate(shown):
            cells = [int(v) for v in counts[i, j]]
            body.append([split if k == 0 else "", str(table.groups[j]), *cells, sum(cells)])
        if rest:
            cells = [int(v) for v in counts[i, rest].sum(axis=0)]
            body.append(["", f"... {len(rest)} more groups (--all-groups lists them)", *cells, sum(cells)])
        totals = [int(v) for v in counts[i].sum(axis=0)]
        body.append(["", "all", *totals, sum(totals)])
    totals = [int(v) for v in counts.sum(axis=(0, 1))]
    body.append(["all", "all", *totals, sum(totals)])
    rows = [dict(zip(["split", "group", *heads], row)) for row in body]
    return format_table(rows)


def cache_info(path: Path) -> dict[str, Any]:
    """What ``fairhead info --json`` prints: the provenance, the shape and every non-empty
    (split, group, label) count."""
    import embedcache

    with embedcache.open(path) as cache:
        table = cache.count_table()
        counts = [{"split": split, "group": group, "label": str(label), "n": int(table.counts[i, j, k])}
                  for i, split in enumerate(table.splits) for j, group in enumerate(table.groups)
                  for k, label in enumerate(table.label_categories) if table.counts[i, j, k]]
        return provenance.strict_json({"cache": str(path), "rows": int(cache.n_rows),
                                       "feature_dim": int(cache.feature_dim), "splits": list(cache.splits),
                                       "label": table.label_name, "label_categories": [str(c) for c in
                                                                                       table.label_categories],
                                       "sensitive": list(cache.sensitive_names), "fingerprint": cache.fingerprint,
                                       "provenance": cache.provenance, "counts": counts})


def describe_cache(path: Path, *, max_groups: int | None = INFO_MAX_GROUPS) -> str:
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
        lines.append(format_counts(cache.count_table(), max_groups=max_groups))
    return "\n".join(lines)


# --------------------------------------------------------------------------- cache -> arrays
@dataclass
class SplitArrays:
    """Everything a head needs from one or more splits of a cache, as numpy arrays.

    ``X`` is a :class:`solvers.RowChunks` instead of an array when the split is read out of
    core (``max_memory``): the features stay on disk and every pass streams them.
    """

    X: Any
    y: np.ndarray
    groups: np.ndarray  # (n, k) integer codes, one column per attribute
    attributes: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    sample_ids: np.ndarray
    #: classes of the label: 2 (``y`` in {0, 1}, 1 the positive class) or K > 2 (``y`` the codes 0 .. K-1)
    n_classes: int = 2
    label_name: str = "label"
    label_categories: tuple[str, ...] = ()

    @property
    def classes(self) -> np.ndarray:
        """The class codes ``0 .. K-1``, for the metrics' ``classes=``: given, they need not find the
        labels again (one ``np.unique`` per metric); two codes read as binary, as the labels would."""
        return np.arange(self.n_classes)

    def take(self, idx) -> "SplitArrays":
        """The rows ``idx`` (positions or a boolean mask), in that order."""
        # every per-row field is indexed and every other field kept (n_classes, the label's name and categories)
        return dataclasses.replace(self, X=self.X[idx], y=self.y[idx], groups=self.groups[idx],
                                   sample_ids=self.sample_ids[idx])

    @functools.cached_property
    def group_names(self) -> np.ndarray:
        """One readable group name per row, ``"Male=yes"`` or ``"Male=yes,Young=no"`` (intersectional),
        so heads, metrics and errors name groups by their categories, never by their codes.

        Built and encoded once per instance (read-only, :class:`solvers.problem.EncodedGroups`):
        every metric call of a sweep reuses the codes instead of re-sorting the names."""
        parts = [np.asarray([f"{a}={c}" for c in self.categories[a]], dtype=object)[self.groups[:, j]]
                 for j, a in enumerate(self.attributes)]
        if len(parts) == 1:
            return encoded_groups(parts[0])
        return encoded_groups(np.asarray([",".join(row) for row in zip(*parts)], dtype=object))

    @functools.cached_property
    def scoring_X(self):
        """``X`` as the heads' scores are computed from: a float64 copy of an in-memory float16/32
        split of at most :data:`SCORING_COPY_MAX_BYTES`, made once, so that a sweep's heads do not
        each convert it again (``solvers``' products convert block by block, to keep a large split's
        memory at 1x); otherwise ``X`` itself. The scores are the same bits either way: each row's
        product is its own, whatever the blocks."""
        X = self.X
        if (isinstance(X, np.ndarray) and X.dtype != np.float64
                and X.size * np.dtype(np.float64).itemsize <= SCORING_COPY_MAX_BYTES):
            return X.astype(np.float64)
        return X


def resolve_attributes(cache, attributes) -> tuple[str, ...]:
    names = tuple(cache.sensitive_names)
    if not names:
        raise DataError(MSG_NO_SENSITIVE.format(path=cache.path))
    if not attributes:
        return names
    for name in attributes:
        if name not in names:
            raise DataError(MSG_UNKNOWN_ATTRIBUTE.format(name=name, path=cache.path, have=", ".join(names)))
    return tuple(attributes)


def positive_code(cache, pos_label) -> int:
    """The label code that counts as the positive class: 1 by default, or the code of ``pos_label``
    (refused for a label of K > 2 classes, which has no positive class)."""
    categories = [str(c) for c in cache.label_categories]
    if pos_label is not None and len(categories) > 2:
        raise DataError(MSG_POS_LABEL_MULTICLASS.format(name=cache.label_name, path=cache.path, k=len(categories)))
    if pos_label is None:
        return 1
    if str(pos_label) not in categories:
        raise DataError(MSG_UNKNOWN_POS_LABEL.format(value=pos_label, name=cache.label_name, path=cache.path,
                                                     have=", ".join(categories)))
    return categories.index(str(pos_label))


def check_names(cache, *, splits=(), attributes=None, pos_label=None) -> None:
    """Refuse a split, sensitive attribute or ``--pos-label`` the cache does not have, from its
    metadata alone: before any features are read or any head is fitted."""
    from embedcache.store.reader import MSG_UNKNOWN_SPLIT

    for name in splits:
        if name not in cache.splits:
            raise DataError(MSG_UNKNOWN_SPLIT.format(path=cache.path, name=name, available=", ".join(cache.splits)))
    resolve_attributes(cache, attributes)
    positive_code(cache, pos_label)


def load_arrays(cache, splits, attributes=None, *, pos_label=None, max_memory=None, parallel=None) -> SplitArrays:
    """Read one split (or several, concatenated) of an open cache into :class:`SplitArrays`.

    ``y`` is 1 for the positive class: the label's second category, or ``pos_label``; for a
    label of K > 2 classes ``y`` holds the codes ``0 .. K-1`` (``pos_label`` is refused). With
    ``max_memory`` (bytes, or ``"2GB"``) the features are not read: ``X`` is a
    :class:`solvers.RowChunks` that streams the split's rows from the cache file in each pass,
    holding at most that much of them at once (the check for non-finite rows is one such pass).
    Under torchrun (``parallel``, a :class:`fairhead.data_parallel.DataParallel`) ``X`` is this
    rank's share of the rows, a :class:`solvers.RowShard` (the other arrays are whole).
    """
    attributes = resolve_attributes(cache, attributes)
    positive = positive_code(cache, pos_label)
    data = cache.load(splits, sensitive=list(attributes), features=max_memory is None and parallel is None)
    groups = np.stack([np.asarray(data.sensitive[a]) for a in attributes], axis=1)
    y = np.asarray(data.labels)
    if parallel is not None:
        X = shard_features(cache, np.asarray(data.rows), parallel, max_memory=max_memory)
    elif max_memory is None:
        X = np.asarray(data.features)
    else:
        X = RowChunks(cache.path, data.rows, dataset=cache.features_key, max_memory=max_memory)
    check_finite_features(X, np.asarray(data.sample_ids), split=splits, path=cache.path)
    return SplitArrays(
        X=X, y=y if positive == 1 else 1 - y, groups=groups, attributes=attributes,
        categories={a: tuple(cache.categories(a)) for a in attributes},
        sample_ids=np.asarray(data.sample_ids), n_classes=max(2, len(cache.label_categories)),
        label_name=str(cache.label_name), label_categories=tuple(str(c) for c in cache.label_categories),
    )


def check_finite_features(X, sample_ids: np.ndarray, *, split, path) -> None:
    """Refuse NaN or infinite features in any split that is read (fit or evaluation), naming the rows:
    a head fitted on clean rows must not crash, or score silently, on damaged test rows."""
    if isinstance(X, np.ndarray):
        bad = ~np.isfinite(X).all(axis=1)  # chunked by the cache's rows: one boolean per row
        count, first = int(bad.sum()), (int(np.flatnonzero(bad)[0]) if bad.any() else None)
    else:  # streamed: the first bad row (one pass, remembered by X so the fit does not repeat it)
        first = X.first_nonfinite()
        count = "at least 1"
    if first is not None:
        split_name = split if isinstance(split, str) else "+".join(map(str, split))
        raise DataError(MSG_NONFINITE_FEATURES.format(split=split_name, path=path, n=count,
                                                      first=str(sample_ids[first])))


def fit_head(head, arrays: SplitArrays, *, split: str):
    """``head.fit`` on ``arrays``; a data error (e.g. a group too small) also names the split."""
    if arrays.n_classes > 2:
        absent = np.setdiff1d(np.arange(arrays.n_classes), np.unique(arrays.y))
        if absent.size:
            names = [arrays.label_categories[k] if k < len(arrays.label_categories) else str(k) for k in absent]
            raise DataError(MSG_MISSING_CLASS.format(split=split, missing=", ".join(map(repr, names)),
                                                     name=arrays.label_name, k=arrays.n_classes))
    try:
        return head.fit(arrays.X, arrays.y, sensitive_features=sensitive_arg(arrays))
    except DataError as err:
        raise DataError(f"fitting on the {split!r} rows: {err}") from err


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
        cert = self.head.certificate_
        name = cert.constraint
        if name is None or self.fit_metrics is None:
            return []
        bounded = self.fit_metrics.get("constraint_value", float("nan"))
        lines = []
        if not CONSTRAINTS[name].bounded:
            lines.append(f"constraint_value on '{self.fit_split}': {bounded:.4f} ({name}: minimised, no eps)")
        else:
            lines.append(f"constraint_value on '{self.fit_split}': {bounded:.4f} (eps {cert.eps:g}; "
                         f"eps_met: {self.eps_met()})")
        lines.append(f"  = {describe_bounded_gap(name, self.head.balance, len(self.head.classes_))}")
        key = BETWEEN_GROUPS[name]
        short = dict(METRIC_COLUMNS)[key]
        lines.append(f"between-groups difference on '{self.fit_split}': {short} {self.fit_metrics[key]:.4f} "
                     "(fairlearn's max - min over groups, unit weights; not the bounded quantity)")
        return lines

    def eps_met(self) -> bool | None:
        """Whether the head keeps its bound on the fit split (None: unconstrained or minimax):
        :attr:`solvers.certificate.Certificate.keeps_bound`."""
        return self.head.certificate_.keeps_bound

    def to_json(self) -> dict:
        """What ``fairhead fit --json`` prints: the head, its certificate, every split's metrics
        (the sweep's names: ``constraint_value``, ``worst_group_accuracy``, ``*_low`` / ``*_high``)."""
        head = self.head
        return provenance.strict_json({
            "constraint": head.certificate_.constraint, "eps": head.eps, "C": head.C, "balance": head.balance,
            "fit_split": self.fit_split, "eps_met": self.eps_met(), "certificate": head.certificate_.to_dict(),
            "fit_metrics": self.fit_metrics, "metrics": self.metrics, "undefined_rates": self.undefined_rates or {},
            "saved_to": None if self.saved_to is None else str(self.saved_to)})

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


def backbone_provenance(cache) -> dict[str, Any]:
    """The backbone fields of an open cache, under :class:`embedcache.BackboneSpec`'s names."""
    from embedcache.store import schema  # deferred: embedcache imports torch (1-2 s)

    prov = cache.provenance
    return {
        "arch": prov.get(schema.BACKBONE_ARCH_ATTR),
        "weights": prov.get(schema.BACKBONE_WEIGHTS_ATTR),
        "weights_sha256": prov.get(schema.WEIGHTS_SHA256_ATTR, ""),
        "preprocessing": prov.get(schema.PREPROCESSING_ATTR),
        "feature_node": prov.get(schema.FEATURE_NODE_ATTR),
        "feature_dim": int(cache.feature_dim),
        "feature_dtype": cache.feature_dtype,
    }


def label_provenance(cache, pos_label=None) -> dict[str, Any]:
    """What a saved head records about its label: the name, the categories, which one is positive,
    and the class names in the head's 0/1 coding (``class_names[1]`` is the positive class)."""
    categories = [str(c) for c in cache.label_categories]
    positive = positive_code(cache, pos_label)
    if len(categories) > 2:  # a multinomial head: class k of the head is category k
        return {"name": cache.label_name, "categories": categories, "positive": None, "class_names": categories}
    return {"name": cache.label_name, "categories": categories, "positive": categories[positive],
            "class_names": [categories[1 - positive], categories[positive]]}


def fit_on_cache(cache_path: Path, *, fit_split: str = "train", eval_splits=None, attributes=None,
                 save: Path | None = None, pos_label=None, confidence: float = 0.95, max_memory=None,
                 parallel=None, progress: bool = False, **head_params) -> FitResult:
    """Fit one :class:`solvers.FairHead` on ``fit_split`` and evaluate it on ``eval_splits``.

    ``max_memory`` (bytes, or ``"2GB"``) fits and evaluates out of core: every split's
    features are streamed from the cache in each pass (:func:`load_arrays`). ``parallel`` (a
    :class:`fairhead.data_parallel.DataParallel`, under torchrun) fits on the ranks' shares of the
    rows; every rank gets the same head and rank 0 saves it.

    The saved head records the cache's backbone and label, so ``fairhead predict`` can rebuild
    the backbone (checked by its weights' sha256) and run both on new images. Every split's
    metrics carry ``confidence`` intervals (:func:`fairhead.uncertainty.interval_columns`).
    ``progress`` shows a bar over the steps (reading, the fit, each evaluated split), its clock
    running during a long fit.
    """
    confidence = check_confidence(confidence)
    bar = progress_bar(progress and (parallel is None or parallel.writes), total=3, desc="fit", unit="step")
    with bar, ticking(bar):
        return _fit_on_cache(bar, cache_path, fit_split=fit_split, eval_splits=eval_splits, attributes=attributes,
                             save=save, pos_label=pos_label, confidence=confidence, max_memory=max_memory,
                             parallel=parallel, head_params=head_params)


def _fit_on_cache(bar, cache_path, *, fit_split, eval_splits, attributes, save, pos_label, confidence, max_memory,
                  parallel, head_params) -> FitResult:
    import embedcache

    bar.set_postfix_str(f"reading '{cache_path}'")
    with embedcache.open(cache_path) as cache:
        check_names(cache, splits=[fit_split, *(eval_splits or ())], attributes=attributes, pos_label=pos_label)
        if save is None:  # beside the cache, named by the constraint and the bound
            cache_path = Path(cache_path)
            name = head_params.get("constraint") or "none"
            name = getattr(name, "name", name)
            save = cache_path.with_name(f"{cache_path.stem}.head-{name}-{head_params.get('eps', 0.05):g}.json")
        # before the fit: a head that cannot be saved, or would replace another file, fails in a second
        if parallel is None or parallel.writes:
            check_head_path(save)
            check_file_target(save, flag="--save", fix="pass --save PATH in a writable folder")
        train = load_arrays(cache, fit_split, attributes, pos_label=pos_label, max_memory=max_memory,
                            parallel=parallel)
        splits = list(eval_splits) if eval_splits else list(cache.splits)
        # every split is read (and checked) before the fit, so bad evaluation rows fail before the work
        evaluated = {split: train if split == fit_split else load_arrays(cache, split, train.attributes,
                                                                          pos_label=pos_label, max_memory=max_memory,
                                                                          parallel=parallel)
                     for split in splits}
        fingerprint = cache.fingerprint
        head_extra = {"backbone": backbone_provenance(cache), "label": label_provenance(cache, pos_label),
                      "categories": {a: list(train.categories[a]) for a in train.attributes}}
    bar.total = 2 + len(evaluated)
    bar.update(1)
    bar.set_postfix_str(f"fitting on '{fit_split}' ({len(train.y)} rows)")
    head = FairHead(**head_params)
    fit_head(head, train, split=fit_split)
    bar.update(1)
    per_split = {}
    for split, arrays in evaluated.items():
        bar.set_postfix_str(f"evaluating on '{split}'")
        scores = head.decision_function(arrays.X)  # once per split: every metric follows from them
        per_split[split] = evaluate_head_scores(head, arrays, scores, bounded=True)
        per_split[split].update(interval_columns(arrays.y, labels_from_scores(scores, head.classes_),
                                                 sensitive_arg(arrays), confidence, classes=arrays.classes))
        bar.update(1)
    undefined = {split: metrics.undefined_rates(arrays.y, sensitive_features=arrays.group_names, classes=arrays.classes)
                 for split, arrays in evaluated.items()}
    fit_metrics = per_split.get(fit_split) or evaluate_head(head, train, bounded=True)
    if parallel is None or parallel.writes:
        save_head(head, save, cache_fingerprint=fingerprint,
                  extra={"fit_split": fit_split, "attributes": list(train.attributes), "cache": str(cache_path),
                         **head_extra})
    return FitResult(head=head, fit_split=fit_split, metrics=per_split, saved_to=Path(save), fit_metrics=fit_metrics,
                     undefined_rates={s: v for s, v in undefined.items() if v})
