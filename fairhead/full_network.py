"""Whole-network fair fine-tuning: the baseline the last-layer heads are compared with.

The network is the cache's backbone, from the same pretrained weights, with a linear head
(zero-initialised): ``z = w . phi_psi(x) + b``, trained end to end on the images with the
logistic loss and one of three objectives (:data:`METHODS`; the math is in
:mod:`fairhead.full_objectives`):

* ``unconstrained``: ``min_theta L(theta)``;
* ``penalty``: the seed code's form, ``min_theta L(theta) + alpha P(theta)``;
* ``lagrangian``: ``min_theta max_{mu >= 0} L(theta) + mu . (c(theta) - eps)`` for the same
  constraint and ``eps`` as the fair head, by gradient descent on ``theta`` and projected
  gradient ascent on ``mu``.

Training is standard torch: AdamW (or SGD with momentum), minibatches in an order drawn from
``(seed, epoch)`` and ``torch.manual_seed`` set from ``(seed, epoch)`` at every epoch (dropout and
drop-connect), a tqdm bar per epoch, and early stopping on the validation rows: after every epoch
the method's objective is measured on them (``unconstrained``: the loss; ``penalty``: loss +
``alpha`` P; ``lagrangian``: the epochs that meet ``eps`` on the validation rows, by the bounded gap
the heads report, compete on their loss, the others on how far they miss it), the best epoch's
weights are kept, and training stops after ``patience`` epochs without improvement
(:meth:`TrainingObjective.stopping_key`).

After every epoch a checkpoint (weights, optimizer state, multipliers, the best weights, the
history) is written with :func:`torch.save` to a temporary file and renamed over the last one;
it is read back with ``torch.load(weights_only=True)``, so no pickled code is ever run. Since the
order and the random state of every epoch are drawn from ``(seed, epoch)``, a run killed at any
point and rerun continues from its last finished epoch to the same final weights as an
uninterrupted run (on CPU bit for bit, with the same number of threads; GPU kernels are not
bit-reproducible).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fairhead_errors import DataError, one_line
from fairhead_io import atomic_open

from fairhead.compare import SEED_PENALTY
from fairhead.full_objectives import METHODS, OPTIMIZERS, ConstraintRelaxation, batch_penalty
from fairhead.measure import constraint_value

CHECKPOINT_FORMAT = "fairhead-full-network-checkpoint"
CHECKPOINT_VERSION = 1
#: test hook: seconds to sleep after each checkpoint is written (lets a test kill a run between epochs)
EPOCH_DELAY_ENV = "FAIRHEAD_TEST_EPOCH_DELAY"
#: EfficientNet-Lite's convolutions pad for 224 px inputs; the padding is the same for any multiple of 32
SAME_PADDING_MULTIPLE = {"efficientnet_lite0": 32}

MSG_OTHER_RUN = ("checkpoint '{path}' belongs to another configuration or other data ({what}); rerun with the "
                 "options it was started with to resume it, or pass --restart to train from the start")
MSG_BAD_CHECKPOINT = ("checkpoint '{path}' cannot be read ({error}); delete it (its method trains from the start) "
                      "or pass --restart")
MSG_BAD_METHOD = "unknown full-network method {name!r}; choose from {known}"
MSG_BAD_IMAGE_SIZE = ("--image-size {size} does not fit {arch}: its convolutions pad for multiples of {multiple} px; "
                      "pass e.g. --image-size {suggest}")
MSG_TOO_FEW_ROWS = "full-network training needs at least 2 {split} rows; got {n}; use a larger dataset or subset"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained network's weights (besides the data and the backbone).

    ``lr`` is the backbone's learning rate and ``head_lr`` the new linear head's; ``weight_decay``
    is AdamW's decoupled decay (SGD: the L2 term); ``dual_lr`` is the multipliers' ascent step;
    ``alpha`` the seed penalty's weight.
    """

    method: str
    constraint: str
    eps: float
    alpha: float = 2.0
    epochs: int = 3
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9
    dual_lr: float = 0.5
    patience: int = 2
    seed: int = 0
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DataError(MSG_BAD_METHOD.format(name=self.method, known=", ".join(METHODS)))
        if self.optimizer not in OPTIMIZERS:
            raise DataError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainData:
    """The rows one network trains and stops on, as a dataset of transformed images plus labels and groups.

    ``images`` maps a position ``k`` to the image tensor of row ``k`` of the rows evaluated (train, valid,
    test, concatenated); ``train_pos`` / ``valid_pos`` are the positions trained and stopped on. ``groups``
    are codes into ``group_labels``.
    """

    images: object
    y: np.ndarray
    groups: np.ndarray
    group_labels: tuple
    train_pos: np.ndarray
    valid_pos: np.ndarray
    identity: str  # hash of the rows, labels, groups and images' preprocessing: part of the checkpoint key


@dataclass
class TrainResult:
    """What :func:`train_network` did: per-epoch history, the epoch kept, the training time over all runs."""

    method: str
    history: list[dict]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    resumed_at_epoch: int = 0
    peak_rss_mb: float = float("nan")
    peak_cuda_mb: float | None = None
    multipliers: list[float] = field(default_factory=list)


class FairNet(nn.Module):
    """A feature extractor with a linear head: ``z = w . phi(x) + b`` (one logit per image)."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)).squeeze(1)


def trainable_copy(backbone_model: nn.Module, feature_dim: int) -> FairNet:
    """A fresh :class:`FairNet` around a copy of a (frozen) backbone's module, every weight trainable."""
    net = FairNet(copy.deepcopy(backbone_model), feature_dim)
    return net.train().requires_grad_(True)


def check_image_size(arch: str, size: int) -> None:
    multiple = SAME_PADDING_MULTIPLE.get(arch)
    if multiple and size % multiple:
        suggest = max(multiple, int(round(size / multiple)) * multiple)
        raise DataError(MSG_BAD_IMAGE_SIZE.format(size=size, arch=arch, multiple=multiple, suggest=suggest))


def default_threads() -> int:
    """Half the cores (at least one). torch's worker threads spin while they wait for each other: on a
    2-core machine two threads trained 1.6x faster than one when the machine was quiet, but 6-13x slower
    with other jobs on the cores (or the data loading); half the cores keeps most of the speed-up of
    large machines and leaves room for the rest."""
    return max(1, (os.cpu_count() or 1) // 2)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 7]).generate_state(1)[0])


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    """The training positions of one epoch, shuffled from ``(seed, epoch)`` and cut into batches; a last
    batch of one row joins the one before (batch norm needs two rows)."""
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        tail = batches.pop()
        batches[-1] = np.concatenate([batches[-1], tail])
    return batches


# --------------------------------------------------------------------------- checkpoints
def config_key(config: TrainConfig, data: TrainData, backbone_sha: str) -> str:
    text = json.dumps({"config": config.as_dict(), "data": data.identity, "backbone": backbone_sha}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` into a temporary file beside ``path``, fsynced, then renamed over it (atomic)."""
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def _differences(saved: str | None, config: TrainConfig | None) -> str:
    """What differs between a checkpoint's configuration and this run's, in words."""
    try:
        before = json.loads(saved) if saved else {}
    except ValueError:
        before = {}
    now = config.as_dict() if config is not None else {}
    changed = [f"{k} {before[k]!r} -> {now[k]!r}" for k in now if k in before and before[k] != now[k]]
    return ", ".join(changed) if changed else "the rows, their images or the backbone differ"


def load_checkpoint(path: Path, key: str, config: TrainConfig | None = None) -> dict | None:
    """The checkpoint at ``path`` (``None`` when there is none); refused when it belongs to another run
    (the message names the options that differ from ``config``)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        raise DataError(MSG_BAD_CHECKPOINT.format(path=path, error=one_line(err))) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(MSG_BAD_CHECKPOINT.format(path=path, error="not a fairhead full-network checkpoint"))
    if state.get("config_key") != key:
        raise DataError(MSG_OTHER_RUN.format(path=path, what=_differences(state.get("config"), config)))
    return state


def _state_on_cpu(module: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- batches
def _loader(images, batches, *, workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(images, batch_sampler=[b.tolist() for b in batches], num_workers=workers)


def predict_scores(net: FairNet, images, positions: np.ndarray, *, device, batch_size: int = 128, workers: int = 0,
                   progress: bool = False, desc: str = "scores") -> np.ndarray:
    """The network's logits ``z`` (float64) for the images at ``positions``, in eval mode."""
    batches = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    out = []
    net.eval()
    with torch.no_grad(), tqdm(total=len(positions), desc=desc, unit="img", disable=not progress,
                               leave=False, dynamic_ncols=True) as bar:
        for x in _loader(images, batches, workers=workers):
            z = net(x.to(device).contiguous(memory_format=torch.channels_last))
            out.append(z.double().cpu().numpy())
            bar.update(len(x))
    return np.concatenate(out) if out else np.zeros(0)


# --------------------------------------------------------------------------- training
def _optimizer(net: FairNet, config: TrainConfig):
    groups = [{"params": list(net.backbone.parameters()), "lr": config.lr},
              {"params": list(net.head.parameters()), "lr": config.head_lr}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)


class TrainingObjective:
    """The method's training objective on a batch, and its early-stopping value on the validation rows."""

    def __init__(self, config: TrainConfig, data: TrainData, device) -> None:
        self.config, self.device = config, device
        self.form = SEED_PENALTY[config.constraint]
        if config.method == "penalty" and self.form is None:
            raise DataError(f"the seed paper has no penalty form of constraint {config.constraint!r}; "
                            "train it with method 'lagrangian'")
        self.relax = None
        if config.method == "lagrangian":
            self.relax = _relaxation(ConstraintRelaxation, config, data, data.train_pos, "training", device)

    def n_multipliers(self) -> int:
        return self.relax.n_multipliers if self.relax is not None else 0

    def batch(self, z, y, groups, rows, mu):
        """``(objective, loss, fairness term, violations or None)`` on one batch."""
        loss = nn.functional.binary_cross_entropy_with_logits(z, y)
        method = self.config.method
        if method == "unconstrained":
            return loss, loss, loss.detach() * 0.0, None
        if method == "penalty":
            pen = batch_penalty(self.form, z, y, groups)
            return (pen if self.form == "MMF" else loss + self.config.alpha * pen), loss, pen, None
        viol = self.relax.violations(self.relax.gaps(z, y, rows))
        return loss + (mu * viol).sum(), loss, viol.max(), viol

    def stopping_key(self, z, y, groups, bounded_gap: float) -> tuple[tuple[float, float], float, float]:
        """``(key, objective, loss)`` on the validation rows; the epoch with the smallest key is kept.

        ``unconstrained`` and ``penalty``: ``(0, objective)``, the objective being ``L`` or ``L + alpha P``
        (MMF: the largest group loss). ``lagrangian``: ``(violation, L)`` with ``violation = max(0, bounded gap
        - eps)`` (the gap the heads' ``eps`` bounds, on hard predictions): the epochs that meet ``eps`` on the
        validation rows compete on their loss, the others on their violation. (Its value at the current
        multipliers is no yardstick: the multipliers move between epochs.)
        """
        loss = float(nn.functional.binary_cross_entropy_with_logits(z, y))
        method = self.config.method
        if method == "lagrangian":
            violation = max(0.0, bounded_gap - self.config.eps) if np.isfinite(bounded_gap) else 0.0
            return (violation, loss), loss, loss
        value = loss
        if method == "penalty":
            pen = float(batch_penalty(self.form, z, y, groups))
            value = pen if self.form == "MMF" else loss + self.config.alpha * pen
        return (0.0, value), value, loss


def _relaxation(cls, config, data, positions, what, device):
    try:
        return cls(config.constraint, y=data.y[positions], groups=data.groups[positions], labels=data.group_labels,
                   eps=config.eps, device=device)
    except DataError as err:
        raise DataError(f"the Lagrangian's constraint on the {what} rows: {err}") from err


def train_network(net: FairNet, data: TrainData, config: TrainConfig, *, checkpoint: Path, backbone_sha: str,
                  device="cpu", workers: int = 0, progress: bool = True, restart: bool = False,
                  usage_of_run=None) -> TrainResult:
    """Train ``net`` on ``data`` by ``config``, resuming from ``checkpoint`` when it holds finished epochs.

    ``net`` ends with the weights of the best epoch on the validation rows (in eval mode).
    ``usage_of_run`` (``() -> (peak_rss_mb, peak_cuda_mb)``) is read at every checkpoint, so the peak
    memory over all runs of a resumed training is kept in the checkpoint.
    """
    for split, pos in (("training", data.train_pos), ("validation", data.valid_pos)):
        if len(pos) < 2:
            raise DataError(MSG_TOO_FEW_ROWS.format(split=split, n=len(pos)))
    device = torch.device(device)
    key = config_key(config, data, backbone_sha)
    saved = None if restart else load_checkpoint(checkpoint, key, config)
    net.to(device).to(memory_format=torch.channels_last)
    objective = TrainingObjective(config, data, device)
    opt = _optimizer(net, config)
    labels = _Labels(y=torch.as_tensor(data.y, dtype=torch.float32, device=device),
                     groups=torch.as_tensor(data.groups, dtype=torch.int64, device=device))
    if saved is None:
        run = _TrainingState(mu=torch.zeros(objective.n_multipliers(), device=device), best_state=_state_on_cpu(net))
    else:
        run = _TrainingState.resume(saved, net, opt, device)
    resumed_at = run.epoch
    delay = float(os.environ.get(EPOCH_DELAY_ENV, "0") or 0)
    while run.epoch < config.epochs and not run.stopped:
        run.epoch += 1
        started = time.perf_counter()
        sums = _train_epoch(net, data, config, objective, opt, run, labels, device=device, workers=workers,
                            progress=progress)
        valid = _validate(net, data, config, objective, labels, device=device, workers=workers)
        improved = run.keep_if_best(net, valid["stop_key"], patience=config.patience)
        run.train_seconds += time.perf_counter() - started
        run.history.append({"epoch": run.epoch, "train_loss": sums["loss"] / max(sums["n"], 1),
                            "train_fairness_term": sums["fair"] / max(sums["n"], 1),
                            "valid_loss": valid["loss"], "valid_objective": valid["objective"],
                            "valid_accuracy": valid["accuracy"], "valid_bounded_gap": valid["gap"],
                            "mu_max": float(run.mu.max()) if len(run.mu) else 0.0, "kept": bool(improved),
                            "seconds": time.perf_counter() - started})
        if usage_of_run is not None:
            run.add_usage(*usage_of_run())
        save_checkpoint(checkpoint, run.checkpoint(key, config, net, opt))
        if delay:
            time.sleep(delay)
    net.load_state_dict(run.best_state)
    net.eval()
    return TrainResult(method=config.method, history=run.history, best_epoch=run.best_epoch, epochs_run=run.epoch,
                       stopped_early=run.stopped, train_seconds=run.train_seconds, resumed_at_epoch=resumed_at,
                       peak_rss_mb=run.peak_rss, peak_cuda_mb=run.peak_cuda,
                       multipliers=[float(m) for m in run.mu.cpu()])


@dataclass
class _Labels:
    """Every row's label and group code on the training device (batches and validation index them)."""

    y: torch.Tensor
    groups: torch.Tensor


@dataclass
class _TrainingState:
    """What training keeps between epochs, and what a checkpoint stores to resume it: the multipliers,
    the best epoch so far (its weights and stopping key), the early-stopping count, the history, the
    training time and the peak memory over every run."""

    mu: torch.Tensor
    best_state: dict
    history: list = field(default_factory=list)
    best_key: tuple = (float("inf"),) * 2
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False
    epoch: int = 0  # epochs finished
    train_seconds: float = 0.0
    peak_rss: float = float("nan")
    peak_cuda: float | None = None

    @classmethod
    def resume(cls, state: dict, net: FairNet, opt, device) -> "_TrainingState":
        """The state a checkpoint saved; ``net`` and ``opt`` get their saved weights and moments."""
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        return cls(mu=state["multipliers"].to(device), best_state=state["best_model"],
                   best_epoch=int(state["best_epoch"]), best_key=tuple(float(v) for v in state["best_key"]),
                   bad_epochs=int(state["bad_epochs"]), stopped=bool(state["stopped"]), epoch=int(state["epoch"]),
                   history=list(state["history"]), train_seconds=float(state["train_seconds"]),
                   peak_rss=float(state["peak_rss_mb"]),
                   peak_cuda=None if state["peak_cuda_mb"] < 0 else float(state["peak_cuda_mb"]))

    def keep_if_best(self, net: FairNet, stop_key: tuple, *, patience: int) -> bool:
        """Keep ``net``'s weights if this epoch's stopping key is the best so far; else count towards
        ``patience`` epochs without improvement. Returns whether the epoch was kept."""
        improved = stop_key < self.best_key
        if improved:
            self.best_key, self.best_epoch, self.bad_epochs = stop_key, self.epoch, 0
            self.best_state = _state_on_cpu(net)
        else:
            self.bad_epochs += 1
            self.stopped = self.bad_epochs >= patience
        return improved

    def add_usage(self, rss: float, cuda: float | None) -> None:
        """Fold this run's peak memory into the peaks over every run."""
        self.peak_rss = float(np.nanmax([self.peak_rss, rss]))
        self.peak_cuda = cuda if self.peak_cuda is None else max(self.peak_cuda, cuda or 0.0)

    def checkpoint(self, key: str, config: TrainConfig, net: FairNet, opt) -> dict:
        """What :func:`save_checkpoint` writes after an epoch (:func:`load_checkpoint` checks ``key``)."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config_key": key,
            "config": json.dumps(config.as_dict(), sort_keys=True), "epoch": self.epoch,
            "model": _state_on_cpu(net), "optimizer": opt.state_dict(), "multipliers": self.mu.detach().cpu(),
            "best_model": self.best_state, "best_key": [float(v) for v in self.best_key],
            "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "stopped": self.stopped, "history": self.history, "train_seconds": self.train_seconds,
            "peak_rss_mb": self.peak_rss, "peak_cuda_mb": -1.0 if self.peak_cuda is None else float(self.peak_cuda)}


def _train_epoch(net: FairNet, data: TrainData, config: TrainConfig, objective: TrainingObjective, opt,
                 run: _TrainingState, labels: _Labels, *, device, workers: int, progress: bool) -> dict:
    """One pass over the training rows in epoch ``run.epoch``'s batches; the multipliers take a projected
    ascent step per batch. Returns the summed loss and fairness term and the rows (``loss``, ``fair``, ``n``)."""
    torch.manual_seed(_epoch_seed(config.seed, run.epoch))  # dropout / drop-connect of this epoch
    batches = epoch_batches(len(data.train_pos), config.batch_size, seed=config.seed, epoch=run.epoch)
    positions = [data.train_pos[b] for b in batches]
    net.train()
    sums = {"loss": 0.0, "fair": 0.0, "n": 0}
    with tqdm(total=len(data.train_pos), desc=f"{config.method} epoch {run.epoch}/{config.epochs}", unit="img",
              disable=not progress, dynamic_ncols=True) as bar:
        for batch, rows, x in zip(positions, batches, _loader(data.images, positions, workers=workers)):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            index = torch.as_tensor(batch, device=device)
            yb, gb = labels.y[index], labels.groups[index]
            z = net(x)
            obj, loss, fair, viol = objective.batch(z, yb, gb, torch.as_tensor(rows, device=device), run.mu)
            opt.zero_grad(set_to_none=True)
            obj.backward()
            opt.step()
            if viol is not None:  # projected ascent on the multipliers, with the step's own estimate
                run.mu = (run.mu + config.dual_lr * viol.detach()).clamp_min(0.0)
            sums["loss"] += float(loss.detach()) * len(batch)
            sums["fair"] += float(fair.detach()) * len(batch)
            sums["n"] += len(batch)
            bar.update(len(batch))
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}",
                            **({"mu_max": f"{float(run.mu.max()):.2f}"} if len(run.mu) else {}))
    return sums


def _validate(net: FairNet, data: TrainData, config: TrainConfig, objective: TrainingObjective, labels: _Labels, *,
              device, workers: int) -> dict:
    """The network on the validation rows: accuracy, the bounded gap, the loss, the objective and the
    early-stopping key (:meth:`TrainingObjective.stopping_key`)."""
    valid_pos = data.valid_pos
    z_valid = torch.as_tensor(predict_scores(net, data.images, valid_pos, device=device, workers=workers),
                              dtype=torch.float32, device=device)
    z_numpy = z_valid.double().cpu().numpy()
    accuracy = float(np.mean((z_numpy > 0) == (data.y[valid_pos] == 1)))
    gap = constraint_value(config.constraint, y=data.y[valid_pos], scores=z_numpy,
                           sensitive_features=data.groups[valid_pos])
    index = torch.as_tensor(valid_pos, device=device)
    stop_key, value, loss = objective.stopping_key(z_valid, labels.y[index], labels.groups[index], gap)
    return {"stop_key": stop_key, "objective": value, "loss": loss, "accuracy": accuracy, "gap": gap}
