"""``fairhead finetune-full``: the whole network fine-tuned with the fairness term, beside the last-layer heads.

One run on one cache; every model is measured on the same rows:

* **last layer** (the cache's features, seconds): the seed paper's protocols B1 B2 B3 M1 M2
  (:func:`fairhead.protocols.protocol_plans`) and the ``eps`` path of the constraint on the train rows
  (:func:`fairhead.sweep.run_sweep`, whose own outputs go to ``eps-path/``);
* **full network** (the images, minutes): the cache's backbone, rebuilt from the weights the cache
  records (checked by their sha256), with a linear head, trained end to end by
  :func:`fairhead.full_network.train_network` for each method (``penalty``: the seed code's form;
  ``lagrangian``: the same constraint and ``eps`` as the heads; ``unconstrained``) on the images of the
  same rows (:func:`fairhead.cache_images.source_of_cache`).

Each model is evaluated on the train, valid and test rows with the sweep's metrics
(:func:`fairhead.sweep.evaluate_predictor`: accuracy, DP / EO / accuracy-equality differences with
intervals, the constraint's own bounded gap, ...), with its wall time and peak memory
(:mod:`fairhead.resources`).

Rows: at most ``max_train`` train rows and ``max_eval`` valid and test rows (a seeded subset; 0 keeps
every row). The heads are fitted on the same subset, so that every number compares like with like.

Outputs in ``out``: ``full_network.csv`` (one row per model and split), ``full_network.json`` (the
side-by-side table, every row, the training configurations and per-epoch histories, provenance),
``report.md``, ``gaps.png``, ``checkpoints/METHOD.pt`` (resumable training) and ``eps-path/``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fairhead_errors import DataError
from fairhead_io import PNG_BY_MATPLOTLIB, check_own_outputs, contains, ensure_output_folder, starts_with
from fairhead_options import check_device
from solvers.constraints import make_constraint
from solvers.head import FairHead
from solvers.intervals import check_confidence

from fairhead import full_report, pipeline, protocols, sweep
from fairhead.cache_images import source_of_cache, source_rows, training_transform
from fairhead.evaluation import evaluate_predictor
from fairhead.full_objectives import DEFAULT_METHODS, METHODS, MSG_MINIMAX_LAGRANGIAN
from fairhead.pipeline import backbone_provenance
from fairhead.predict import ImageRows, rebuild_backbone
from fairhead.resources import added, measure, peak_so_far

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s) and fairhead.full_network
# (torch); a command that does not need them does not pay for them. Heads are solvers.FairHead (no scikit-learn).

#: every file written into --out, with the first bytes that mark it as fairhead's own
FULL_OUTPUTS = {"full_network.csv": starts_with(b"family,method,"), "full_network.json": contains(b'"side_by_side"'),
                "report.md": starts_with(b"# fairhead"), "gaps.png": PNG_BY_MATPLOTLIB}
EPS_PATH_DIR = "eps-path"
CHECKPOINT_DIR = "checkpoints"
SPLITS = ("train", "valid", "test")
#: default row limits: the CPU setting (the generated 3000-image dataset keeps every row)
MAX_TRAIN, MAX_EVAL = 2000, 1000
N_EPS = 6
MSG_MISSING_SPLIT = ("finetune-full needs splits train, valid and test; cache '{path}' has {have}; "
                     "re-extract with all three")
MSG_NO_CONSTRAINT = "finetune-full compares fairness constraints; pass --constraint eo (or another), not 'none'"
MSG_BALANCE = ("--balance reweights the heads only, and the full network trains with unit weights; drop --balance "
               "so that every model bounds the same quantity")
MSG_NO_METHODS = "pass at least one full-network method: --methods {known}"
MSG_BINARY_ONLY = ("finetune-full trains a network with one logit (a binary label), but label {name!r} in cache "
                   "'{path}' has {k} classes; build the cache with a binary label")


@dataclass
class ModelRecord:
    """One fitted model (a head or a network): its metrics per split and what its fit cost."""

    family: str  # "last-layer" or "full-network"
    method: str  # B1 ... M2, "eps path", or a full-network method
    fit_on: str
    eps: float
    alpha: float
    metrics: dict[str, dict[str, float]]
    wall_s: float
    peak_rss_mb: float
    added_rss_mb: float
    peak_cuda_mb: float | None = None
    notes: str = ""
    epochs_run: int | None = None
    best_epoch: int | None = None

    @property
    def name(self) -> str:
        if self.method == "eps path":
            return f"path eps={self.eps:.4g}"
        if self.family == "full-network":
            extra = f" alpha={self.alpha:g}" if self.method == "penalty" and np.isfinite(self.alpha) else ""
            extra += f" eps={self.eps:g}" if self.method == "lagrangian" else ""
            return f"full {self.method}{extra}"
        return self.method

    def rows(self, constraint: str) -> list[dict]:
        return [{"family": self.family, "method": self.method, "model": self.name, "fit_on": self.fit_on,
                 "constraint": constraint, "eps": self.eps, "alpha": self.alpha, "split": split, **values,
                 "wall_s": self.wall_s, "peak_rss_mb": self.peak_rss_mb, "added_rss_mb": self.added_rss_mb,
                 "peak_cuda_mb": self.peak_cuda_mb, "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                 "notes": self.notes}
                for split, values in self.metrics.items()]


@dataclass
class FullComparison:
    """The result of :func:`run_full_comparison`."""

    out: Path
    constraint: str
    eps: float
    models: list[ModelRecord]
    split_sizes: dict[str, int]
    setting: dict
    training: dict[str, dict] = field(default_factory=dict)  # method -> config, history, ...
    files: dict[str, Path] = field(default_factory=dict)
    wall_s: float = float("nan")

    @property
    def rows(self) -> list[dict]:
        return [row for m in self.models for row in m.rows(self.constraint)]

    def summary(self) -> str:
        return full_report.summary_text(self)


# --------------------------------------------------------------------------- rows
def subset(n: int, limit: int, *, seed: int, salt: int) -> np.ndarray:
    """At most ``limit`` of ``n`` positions (all for ``limit`` 0), drawn from ``(seed, salt)``, sorted."""
    if not limit or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng([int(seed), int(salt)]).choice(n, size=int(limit), replace=False))


def _rows_fingerprint(fingerprint: str, data: dict) -> str:
    """The cache's fingerprint and the subset's ids: what the heads were fitted on (the eps path resumes by it)."""
    digest = hashlib.sha256(fingerprint.encode())
    for split in SPLITS:
        digest.update(f"\x01{split}\x00".encode())
        digest.update("\x00".join(map(str, data[split].sample_ids)).encode())
    return digest.hexdigest()


def _evaluate(scores_fn, data, constraint, confidence) -> dict[str, dict[str, float]]:
    metrics = evaluate_predictor(scores_fn, None, {s: data[s] for s in SPLITS}, constraint, confidence=confidence)
    return {s: {"n": int(len(data[s].y)), **metrics[s]} for s in SPLITS}


# --------------------------------------------------------------------------- last layer
def last_layer_models(data, *, constraint, eps, seed, head_params, confidence, out, n_eps, fingerprint, progress,
                      cache_path=None, plots=True) -> list[ModelRecord]:
    """B1 B2 B3 M1 M2 and the eps path on the train rows, each with its time and peak memory."""
    models = []
    for name, (fit_on, cons) in protocols.protocol_plans(data["train"], data["valid"], constraint=constraint,
                                                         seed=seed).items():
        with warnings.catch_warnings(record=True) as caught, measure() as usage:
            warnings.simplefilter("always")  # an unmet bound is noted in its row, not raised
            head = FairHead(constraint=cons, eps=eps, **head_params)
            pipeline.fit_head(head, fit_on, split=f"{name} fine-tune")
        metrics = _evaluate(lambda a, h=head: h.decision_function(a.X), data, constraint, confidence)
        models.append(ModelRecord(
            family="last-layer", method=name, fit_on=protocols.FIT_ON[name],
            eps=eps if cons else float("nan"), alpha=float("nan"), metrics=metrics, wall_s=usage.wall_s,
            peak_rss_mb=usage.peak_rss_mb, added_rss_mb=usage.added_rss_mb,
            notes="; ".join(sorted({str(w.message) for w in caught}))))
    arrays = {s: data[s] for s in SPLITS}
    with measure() as usage:
        result = sweep.run_sweep(cache_path, out=Path(out) / EPS_PATH_DIR, constraint=constraint, n_eps=n_eps,
                                 fit_split="train", progress=progress, seed=seed, confidence=confidence,
                                 data=(arrays, fingerprint, {}), plots=plots, **head_params)
    for rec in result.records:
        if rec.method != "fairhead":
            continue  # its unconstrained head is B1's
        models.append(ModelRecord(
            family="last-layer", method="eps path", fit_on="train", eps=float(rec.eps), alpha=float("nan"),
            metrics={s: {"n": int(len(data[s].y)), **rec.metrics[s]} for s in SPLITS}, wall_s=float(rec.wall_time),
            peak_rss_mb=usage.peak_rss_mb, added_rss_mb=usage.added_rss_mb,
            notes="; ".join(filter(None, [rec.notes, "time: this head's solve; memory: the whole path's"]))))
    return models


# --------------------------------------------------------------------------- full network
@dataclass(frozen=True)
class NetworkOptions:
    """How the full network trains (see :class:`fairhead.full_network.TrainConfig`) and where it runs."""

    epochs: int = 3
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9
    alpha: float = 2.0
    dual_lr: float = 0.5
    patience: int = 2
    image_size: int = 64
    device: str = "auto"
    threads: int | None = None
    workers: int = 0

    def train_config(self, method: str, *, constraint: str, eps: float, seed: int):
        from fairhead.full_network import TrainConfig

        return TrainConfig(method=method, constraint=constraint, eps=eps, alpha=self.alpha, epochs=self.epochs,
                           batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr, head_lr=self.head_lr,
                           weight_decay=self.weight_decay, momentum=self.momentum, dual_lr=self.dual_lr,
                           patience=self.patience, seed=seed, image_size=self.image_size)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else is checked by the shared
    option check (:func:`fairhead_options.check_device`)."""
    return check_device(name, flag="--device")


def _train_data(data, source, transform, *, cache_path, fingerprint):
    from fairhead.full_network import TrainData

    from embedcache.backbones import describe_transform

    ids = np.concatenate([data[s].sample_ids for s in SPLITS])
    names = np.concatenate([data[s].group_names for s in SPLITS]).astype(str)
    labels = tuple(np.unique(names))
    codes = np.searchsorted(np.asarray(labels), names).astype(np.int64)
    y = np.concatenate([data[s].y for s in SPLITS]).astype(np.int64)
    n_train, n_valid = len(data["train"].y), len(data["valid"].y)
    digest = hashlib.sha256(json.dumps({"cache": fingerprint, "transform": describe_transform(transform),
                                        "groups": list(labels)}).encode())
    for part in (ids[:n_train + n_valid].astype(str), y[:n_train + n_valid], codes[:n_train + n_valid]):
        digest.update("\x00".join(map(str, part)).encode())
    images = ImageRows(source, transform, source_rows(source, ids, path=cache_path))
    return TrainData(images=images, y=y, groups=codes, group_labels=labels, train_pos=np.arange(n_train),
                     valid_pos=n_train + np.arange(n_valid), identity=digest.hexdigest())


@dataclass
class NetworkPlan:
    """Everything the full-network stage needs, checked before any model is fitted."""

    backbone: object
    transform: object
    data: object  # fairhead.full_network.TrainData
    configs: dict  # method -> TrainConfig
    device: str
    threads: int
    checkpoints: Path
    backbone_sha: str
    options: NetworkOptions


def prepare_full_network(cache_path, data, *, backbone_prov, source, methods, constraint, eps, seed, options,
                         out, restart, weights_file=None, fingerprint) -> NetworkPlan:
    """Rebuild the backbone (checked by its sha256), the images and the training configurations, and refuse
    a checkpoint of another configuration, all before the first fit: a run that cannot finish fails at once."""
    from fairhead.full_network import TrainingObjective, check_image_size, config_key, default_threads, load_checkpoint

    device = resolve_device(options.device)
    check_image_size(backbone_prov["arch"], options.image_size)
    backbone = rebuild_backbone(backbone_prov, path=cache_path, weights_file=weights_file)
    transform = training_transform(backbone.transform, options.image_size)
    tdata = _train_data(data, source, transform, cache_path=cache_path, fingerprint=fingerprint)
    checkpoints = Path(out) / CHECKPOINT_DIR
    sha = str(backbone_prov.get("weights_sha256"))
    configs = {m: options.train_config(m, constraint=constraint, eps=eps, seed=seed) for m in methods}
    for method, config in configs.items():
        TrainingObjective(config, tdata, "cpu")  # a constraint the training rows cannot carry fails here
        if not restart:
            load_checkpoint(checkpoints / f"{method}.pt", config_key(config, tdata, sha), config)
    checkpoints.mkdir(parents=True, exist_ok=True)
    return NetworkPlan(backbone=backbone, transform=transform, data=tdata, configs=configs, device=device,
                       threads=options.threads or default_threads(), checkpoints=checkpoints, backbone_sha=sha,
                       options=options)


def full_network_models(plan: NetworkPlan, data, *, constraint, confidence, progress, restart) -> tuple[list, dict]:
    """Train each method's network (resuming from its checkpoint) and evaluate it on the three splits."""
    import torch

    from fairhead.full_network import predict_scores, train_network, trainable_copy

    options, device, tdata = plan.options, plan.device, plan.data
    sizes = [len(data[s].y) for s in SPLITS]
    everything = np.arange(sum(sizes))
    bounds = np.cumsum([0, *sizes])
    threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    models, training = [], {}
    try:
        for method, config in plan.configs.items():
            net = trainable_copy(plan.backbone.model, plan.backbone.feature_dim)
            with measure(device) as usage:
                result = train_network(net, tdata, config, checkpoint=plan.checkpoints / f"{method}.pt",
                                       backbone_sha=plan.backbone_sha, device=device, workers=options.workers,
                                       progress=progress, restart=restart, usage_of_run=lambda: peak_so_far(device))
                started = time.perf_counter()
                z = predict_scores(net, tdata.images, everything, device=device, workers=options.workers,
                                   progress=progress, desc=f"evaluate {method}")
                eval_s = time.perf_counter() - started
            scored = {s: pipeline.SplitArrays(X=z[bounds[k]:bounds[k + 1], None], y=data[s].y, groups=data[s].groups,
                                              attributes=data[s].attributes, categories=data[s].categories,
                                              sample_ids=data[s].sample_ids) for k, s in enumerate(SPLITS)}
            metrics = _evaluate(lambda a: a.X[:, 0], scored, constraint, confidence)
            peak = float(np.nanmax([usage.peak_rss_mb, result.peak_rss_mb]))
            cuda = [c for c in (usage.peak_cuda_mb, result.peak_cuda_mb) if c is not None]
            notes = [f"best epoch {result.best_epoch} of {result.epochs_run}"]
            if result.stopped_early:
                notes.append("stopped early")
            if result.resumed_at_epoch:
                notes.append(f"resumed after epoch {result.resumed_at_epoch}")
            models.append(ModelRecord(
                family="full-network", method=method, fit_on="train (images)",
                eps=config.eps if method == "lagrangian" else float("nan"),
                alpha=config.alpha if method == "penalty" else float("nan"), metrics=metrics,
                wall_s=result.train_seconds + eval_s, peak_rss_mb=peak, added_rss_mb=added(peak, usage.start_rss_mb),
                peak_cuda_mb=max(cuda) if cuda else None, notes="; ".join(notes), epochs_run=result.epochs_run,
                best_epoch=result.best_epoch))
            training[method] = {"config": config.as_dict(), "history": result.history, "best_epoch": result.best_epoch,
                                "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
                                "resumed_at_epoch": result.resumed_at_epoch, "multipliers": result.multipliers,
                                "train_seconds": result.train_seconds, "eval_seconds": eval_s}
            del net
            gc.collect()
    finally:
        torch.set_num_threads(threads)
    arch, weights = plan.backbone.spec.arch, plan.backbone.spec.weights
    setting = {"device": device, "threads": plan.threads, "image_size": options.image_size,
               "backbone": f"{arch}/{weights}", "transform": str(plan.transform), "workers": options.workers}
    return models, {"training": training, "setting": setting}


# --------------------------------------------------------------------------- the command
def run_full_comparison(cache_path, *, out, constraint="eo", eps=0.05, methods=None, attributes=None,
                        pos_label=None, max_train=MAX_TRAIN, max_eval=MAX_EVAL, n_eps=N_EPS, seed=0,
                        options: NetworkOptions | None = None, C=1.0, backend="auto", balance=None,
                        solver_device="cpu", min_group_size=10, confidence=0.95, progress=True, restart=False,
                        manifest=None, root=None, celeba=None, weights_file=None, plots=True) -> FullComparison:
    """Fine-tune the whole network with each method and put it beside the last-layer heads (module docstring)."""
    import embedcache

    started = time.perf_counter()
    methods = list(DEFAULT_METHODS if methods is None else methods)
    if not methods:
        raise DataError(MSG_NO_METHODS.format(known=" ".join(METHODS)))
    for m in methods:
        if m not in METHODS:
            raise DataError(f"unknown full-network method {m!r}; choose from {', '.join(METHODS)}")
    if constraint in (None, "none"):
        raise DataError(MSG_NO_CONSTRAINT)
    cons = make_constraint(constraint)
    if not cons.bounded and "lagrangian" in methods:
        raise DataError(MSG_MINIMAX_LAGRANGIAN)
    if balance not in (None, "none"):
        raise DataError(MSG_BALANCE)
    confidence = check_confidence(confidence)
    options = options or NetworkOptions()
    resolve_device(options.device)  # a bad --device fails before any work
    out = ensure_output_folder(out, flag="--out")
    check_own_outputs(out, FULL_OUTPUTS, flag="--out")
    check_own_outputs(out / EPS_PATH_DIR, sweep.SWEEP_OUTPUTS, flag="--out")
    with embedcache.open(cache_path) as cache:
        if not set(SPLITS) <= set(cache.splits):
            raise DataError(MSG_MISSING_SPLIT.format(path=cache_path, have=", ".join(cache.splits)))
        if len(cache.label_categories) > 2:
            raise DataError(MSG_BINARY_ONLY.format(name=cache.label_name, path=cache_path,
                                                   k=len(cache.label_categories)))
        source = source_of_cache(cache, manifest=manifest, root=root, celeba=celeba)
        data = {}
        for salt, split in enumerate(SPLITS):
            arrays = pipeline.load_arrays(cache, split, attributes if not data else data["train"].attributes,
                                          pos_label=pos_label)
            data[split] = arrays.take(subset(len(arrays.y), max_train if split == "train" else max_eval,
                                             seed=seed, salt=salt))
        backbone_prov = backbone_provenance(cache)
        fingerprint = cache.fingerprint
        cache_prov = dict(cache.provenance)
    rows_fp = _rows_fingerprint(fingerprint, data)
    head_params = dict(C=C, backend=backend, device=solver_device, min_group_size=min_group_size)
    say = print if progress else (lambda *a, **k: None)
    plan = prepare_full_network(cache_path, data, backbone_prov=backbone_prov, source=source, methods=methods,
                                constraint=cons.name, eps=eps, seed=seed, options=options, out=out, restart=restart,
                                weights_file=weights_file, fingerprint=rows_fp)
    # --threads is every CPU thread of the command: torch's (training) and numpy's BLAS (the heads' products,
    # whose bits follow the thread count: the same --threads, the same heads, as a rerun after a kill)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(plan.threads, user_api="blas"):
        say(f"last layer: protocols B1 B2 B3 M1 M2 and the {cons.name} eps path on the cache's features")
        models = last_layer_models(data, constraint=cons.name, eps=eps, seed=seed, head_params=head_params,
                                   confidence=confidence, out=out, n_eps=n_eps, fingerprint=rows_fp,
                                   progress=progress, cache_path=cache_path, plots=plots)
        say(f"full network: {', '.join(methods)} on {options.image_size} px images ({plan.device}, "
            f"{plan.threads} thread(s))")
        full, extra = full_network_models(plan, data, constraint=cons.name, confidence=confidence,
                                          progress=progress, restart=restart)
    setting = {**extra["setting"], "cache": str(cache_path), "cache_fingerprint": fingerprint,
               "rows": {s: int(len(data[s].y)) for s in SPLITS}, "max_train": max_train, "max_eval": max_eval,
               "seed": seed, "n_eps": n_eps, "head_params": head_params,
               "source": cache_prov.get("source"), "methods": methods}
    result = FullComparison(out=out, constraint=cons.name, eps=float(eps), models=models + full,
                            split_sizes={s: int(len(data[s].y)) for s in SPLITS}, setting=setting,
                            training=extra["training"])
    result.wall_s = time.perf_counter() - started
    result.files = full_report.write_outputs(result, plots=plots)
    return result
