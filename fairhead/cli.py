"""The ``fairhead`` command line: argument parsing, dispatch and exit codes.

Each subcommand is a thin wrapper over :mod:`fairhead.pipeline` (and the
stage modules it calls), so everything the CLI does is also a Python call.

Exit codes, one per family (as pip does):

==== =====================================================
0    success
1    unexpected error (a bug: the traceback is printed, please report it)
2    usage error (argparse)
3    bad data, cache or backbone (:class:`DataError`, :class:`CacheError`, :class:`BackboneError`),
     or an operating-system error on a path (a full disk, a read-only or missing folder)
4    infeasible constraint or solver failure
130  interrupted (Ctrl-C); extraction and sweeps resume when rerun
==== =====================================================

Known errors print one line, ``fairhead: error: <message>``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fairhead_errors import DataError, FairheadError
from solvers.constraints import CONSTRAINTS as CONSTRAINT_CLASSES

PROG = "fairhead"
EXIT_INTERRUPTED = 130
#: ``fairhead select`` found no head it can certify (it still wrote selection.json): a result, not an error
EXIT_ABSTAINED = 5

#: the constraint names, read from the registry ``solvers.constraints.CONSTRAINTS``
SCORE_CONSTRAINTS = tuple(name for name, c in CONSTRAINT_CLASSES.items() if c.kind == "score")
RATE_CONSTRAINTS = tuple(name for name, c in CONSTRAINT_CLASSES.items() if c.kind == "rate")
#: the constraints that condition on the label, so every (group, label) cell needs rows
LABEL_CELL_CONSTRAINTS = tuple(name for name, c in CONSTRAINT_CLASSES.items() if c.needs_label_cells)
CONSTRAINTS = RATE_CONSTRAINTS + SCORE_CONSTRAINTS


# --------------------------------------------------------------------------- numeric flags
def _int_at_least(low: int, note: str = ""):
    """An argparse ``type``: an integer >= ``low`` (checked by :func:`fairhead_options.check_integer`), so an
    out-of-range count is a usage error (exit 2) instead of a silent one-point sweep or a crash deep inside."""
    from fairhead_options import check_integer

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = text
        try:
            return check_integer(value, low=low, note=note)
        except DataError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = "int"  # argparse names the type in its own messages
    return parse


def MEMORY_SIZE(text: str) -> str:
    """An argparse ``type``: a memory budget such as ``2GB`` (checked here, passed on as written)."""
    from solvers.out_of_core import parse_memory

    try:
        parse_memory(text)
    except DataError as err:
        if "more than this machine" in str(err):  # a well-formed size the machine does not have
            raise argparse.ArgumentTypeError(str(err).replace("`max_memory` ", "", 1)) from None
        raise argparse.ArgumentTypeError(f"must be a memory size such as 2GB, 512MB or 1.5GiB; got {text!r}") from None
    return text


POSITIVE_INT = _int_at_least(1)
NONNEGATIVE_INT = _int_at_least(0)
SEED = NONNEGATIVE_INT
COUNT = _int_at_least(0, " (0: every row)")
GRID_SIZE = _int_at_least(2, " (a sweep needs at least two bounds)")
N_EPS_DEFAULT = 20
#: ``embedcache.SyntheticSource``'s default (its module imports torch, so the number is repeated here;
#: a test holds the two equal), so ``extract --synthetic`` and the Python example make one dataset
MINORITY_FRACTION = 0.2
EPS_DEFAULT = 0.05
#: constraints without a bound: an --eps given with them would be ignored, so it is refused
UNBOUNDED_CONSTRAINTS = ("none",) + tuple(name for name, c in CONSTRAINT_CLASSES.items() if not c.bounded)


def _version() -> str:
    """The installed distribution's version, or the source tree's when run from a checkout."""
    from importlib import metadata

    import fairhead

    try:
        return metadata.version("fairhead")
    except metadata.PackageNotFoundError:
        return fairhead.__version__


# --------------------------------------------------------------------------- shared options, each defined once
# An option several commands take is added here, by one function with one type, one help text and one check
# (fairhead_options); a command passes only what differs for it (a default, what the option is for). The checks
# that are not argparse types run in main() before the command starts (a DataError: one line, exit 3).
def _check_before_work(container, dest: str, check) -> None:
    """Run ``check(value)`` on the option ``dest`` (when given) before the command does any work."""
    checks = container.get_default("option_checks") or ()
    container.set_defaults(option_checks=checks + ((dest, check),))


def _add_device(container, *, kinds=("cpu", "cuda")) -> None:
    """``--device``: where a network runs (checked by :func:`fairhead_options.check_device`)."""
    from fairhead_options import check_device

    container.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    _check_before_work(container, "device", lambda value: check_device(value, flag="--device", kinds=kinds))


def _add_batch_size(container, *, default: int | None, help: str, low: int = 1) -> None:
    """``--batch-size``: images per forward pass or step (checked by :func:`fairhead_options.check_batch_size`)."""
    from fairhead_options import check_batch_size

    container.add_argument("--batch-size", type=int, default=default, help=help)
    _check_before_work(container, "batch_size", lambda value: check_batch_size(value, flag="--batch-size", low=low))


def _add_confidence(container, *, help: str = "level of every interval (default: 0.95)") -> None:
    """``--confidence``: the level of intervals and certificates (checked by
    :func:`fairhead_options.check_confidence`)."""
    from fairhead_options import check_confidence

    container.add_argument("--confidence", type=float, default=0.95, help=help)
    _check_before_work(container, "confidence", lambda value: check_confidence(value, flag="--confidence"))


def _add_progress(container, *, what: str = "progress bars") -> None:
    container.add_argument("--no-progress", action="store_true", help=f"hide {what}")


def _add_out(container, *, help: str, required: bool = True, default: Path | None = None) -> None:
    container.add_argument("--out", type=Path, required=required, default=default, help=help)


def _add_overwrite(container) -> None:
    container.add_argument("--overwrite", action="store_true", help="replace a cache built from something else")


def _add_dtype(container) -> None:
    container.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored feature dtype")


def _add_plots(container, *, what: str = "the plots") -> None:
    container.add_argument("--no-plots", action="store_true", help=f"skip {what}")


def _add_json(container, what: str) -> None:
    container.add_argument("--json", action="store_true",
                           help=f"print JSON instead of the text tables: {what} (the names of sweep.csv)")


def _add_memory(container) -> None:
    container.add_argument("--max-memory", type=MEMORY_SIZE, metavar="SIZE",
                           help="fit out of core: stream the features from the cache in chunks, holding at most SIZE "
                                "of them at once (e.g. 2GB, 512MB; default: read them into memory)")


def _add_sampling(container, *, n_help: str | None = None, seed_help: str, n_aliases: tuple = ()) -> None:
    """``--n`` (when ``n_help`` is given) and ``--seed``: how many images to generate and the seed."""
    if n_help is not None:
        container.add_argument("--n", *n_aliases, type=POSITIVE_INT, default=3000, help=n_help)
    container.add_argument("--seed", type=SEED, default=0, help=seed_help)


def _add_generated_dataset(container, *, n_aliases: tuple = ()) -> None:
    """The generated default dataset's options (``extract --synthetic`` and ``generate`` make the same one)."""
    _add_sampling(container, n_help="number of images (default: 3000)", seed_help="dataset seed (default: 0)",
                  n_aliases=n_aliases)
    container.add_argument("--correlation", type=float, default=0.8,
                           help="P(label agrees with the sensitive attribute) (default: 0.8)")
    container.add_argument("--minority-fraction", type=float, default=MINORITY_FRACTION,
                           help=f"share of the smaller sensitive group (default: {MINORITY_FRACTION:g}, "
                                "as SyntheticSource)")


def _add_n_eps(container, *, default: int | None, help: str) -> None:
    container.add_argument("--n-eps", type=GRID_SIZE, default=default, help=help)


def _add_fit_split(container, *, help: str) -> None:
    container.add_argument("--fit-split", default="train", help=help)


WEIGHTS_FILE_HELP = "the weights file the cache was built with (checked by sha256)"


def _add_weights_file(container, *, help: str = WEIGHTS_FILE_HELP) -> None:
    container.add_argument("--weights-file", type=Path, help=help)


def _add_head_file(container) -> None:
    container.add_argument("--head", type=Path, required=True,
                           help="head file written by `fairhead fit` (.json or .npz)")


def _add_manifest_columns(container, *, target_help: str, sensitive_help: str, split_col_help: str) -> None:
    """The columns of a CSV manifest (and the CelebA attributes), for ``extract`` and ``predict``."""
    container.add_argument("--target", help=target_help)
    container.add_argument("--sensitive", nargs="+", metavar="NAME", help=sensitive_help)
    container.add_argument("--image-col", default="path", help="manifest column holding image paths (default: path)")
    container.add_argument("--split-col", help=split_col_help)
    container.add_argument("--id-col", help="manifest column holding sample ids (default: the image path)")


def _add_fit_options(parser: argparse.ArgumentParser, *, eps_default: float | None = EPS_DEFAULT) -> None:
    """The fair head's options (``fit``, ``sweep``, ``protocols``, ``finetune-full``)."""
    from fairhead_options import check_device

    group = parser.add_argument_group("fair head")
    group.add_argument("--constraint", default="dp", choices=CONSTRAINTS + ("none",),
                       help="rate: " + ", ".join(RATE_CONSTRAINTS) + "; score: " + ", ".join(SCORE_CONSTRAINTS)
                       + "; none: unconstrained (default: dp; the Python estimator's default is none)")
    if eps_default is not None:  # default None: an --eps given with a constraint that has no bound is refused
        group.add_argument("--eps", type=float, default=None, help=f"constraint tolerance (default: {eps_default:g})")
    group.add_argument("--C", type=float, default=1.0, help="inverse L2 strength, scikit-learn's meaning (default: 1)")
    group.add_argument("--backend", choices=("auto", "torch", "cvxpy"), default="auto",
                       help="solver: torch (fast, any size) or cvxpy (the exact reference, slow on large "
                            "problems); auto: torch")
    group.add_argument("--balance", choices=("none", "group", "label-group"), default="none",
                       help="reweight so every group / (label, group) cell has equal total weight")
    group.add_argument("--attributes", nargs="+", metavar="NAME",
                       help="sensitive attributes to constrain (default: all in the cache; several -> intersectional)")
    group.add_argument("--solver-device", default="cpu", help="torch backend device (cpu or cuda)")
    _check_before_work(group, "solver_device", lambda value: check_device(
        value, flag="--solver-device", kinds=("cpu", "cuda", "mps"), allow_auto=False))
    group.add_argument("--pos-label", metavar="CLASS",
                       help="the label category that is the positive class (default: the second, e.g. 1 or yes); "
                            "binary labels only")
    group.add_argument("--min-group-size", type=int, default=10, metavar="N",
                       help="refuse groups (and, for " + "/".join(LABEL_CELL_CONSTRAINTS)
                       + ", (group, label) cells) with fewer rows")


# --------------------------------------------------------------------------- the commands' parsers
def _extract_parser(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("data source (choose one)")
    which = group.add_mutually_exclusive_group(required=True)
    which.add_argument("--celeba", metavar="ROOT", type=Path,
                       help="CelebA folder with img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt")
    which.add_argument("--manifest", metavar="CSV", type=Path,
                       help="CSV manifest: an image path column, a label column, sensitive columns, optional split")
    which.add_argument("--synthetic", action="store_true",
                       help="the generated default dataset (deterministic from --seed)")
    which.add_argument("--preset", metavar="NAME",
                       help="a named dataset preset (see `fairhead presets`); e.g. celeba-blond-male with --root")
    group.add_argument("--root", type=Path, help="image root for --manifest / dataset root for --preset")
    _add_manifest_columns(group, target_help="target attribute (CelebA) or label column (manifest)",
                          sensitive_help="sensitive attribute(s) / column(s)",
                          split_col_help="manifest column holding the split name (default: none, hashed split)")
    # --num-images: under torchrun, whose parser reads a bare --n as an abbreviation of its own
    # --nnodes/--nproc-per-node
    _add_generated_dataset(p.add_argument_group("generated dataset (--synthetic)"), n_aliases=("--num-images",))

    group = p.add_argument_group("backbone")
    group.add_argument("--backbone", default="efficientnet_lite0",
                       help="backbone name: efficientnet_lite0 (offline default) or any torchvision "
                            "classification model (resnet50, vit_b_16, convnext_tiny, ...)")
    group.add_argument("--weights", help="torchvision weights name, e.g. IMAGENET1K_V2 or DEFAULT "
                                         "(with --weights-file: that name's preprocessing, offline)")
    _add_weights_file(group, help="local state_dict for the same architecture "
                                  "(torchvision's file or your fine-tuned checkpoint)")
    group.add_argument("--image-size", type=POSITIVE_INT, help="input size (default: the weights' own preprocessing)")
    group.add_argument("--autocast", choices=("auto", "off", "bf16", "fp16"), default="auto",
                       help="mixed precision on CUDA (default: bf16 where supported; always off on CPU)")
    _add_batch_size(group, default=None,
                    help="images per forward pass (default: 64; a resume keeps the size it last used)")
    group.add_argument("--workers", type=int, default=None,
                       help="DataLoader worker processes that decode images; 0: a background thread of this "
                            "process does (default: auto, 0 on CPUs with up to 4 cores)")
    _add_device(group, kinds=("cpu", "cuda", "mps"))
    _add_dtype(group)
    _add_overwrite(group)
    _add_progress(group)
    _add_out(p, help="cache file to write (.h5)")
    p.add_argument("--no-merge", action="store_true",
                   help="under torchrun: keep the ranks' shard files and write --out as a view over them "
                        "(an HDF5 virtual dataset, no copy) instead of merging them (a single process ignores it)")


def _generate_parser(p: argparse.ArgumentParser) -> None:
    _add_out(p, help="folder to write")
    _add_generated_dataset(p)


def _import_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", type=Path, help="CSV, Parquet or .npz file")
    p.add_argument("--label", required=True,
                   help="label column: 2 classes, or K > 2 (a multinomial head, fairness per class)")
    p.add_argument("--sensitive", nargs="+", required=True, help="sensitive column(s)")
    p.add_argument("--features", "--features-col", nargs="+", metavar="COLUMN",
                   help="feature columns, or a vector column (Parquet list<float>, .npz 2-D array) "
                        "(default: every other numeric column)")
    p.add_argument("--split", help="split column (default: a deterministic hashed train/valid/test split)")
    p.add_argument("--id-col", help="sample id column (default: row number)")
    _add_dtype(p)
    p.add_argument("--sensitive-missing", choices=("error", "group", "drop"), default="error",
                   help="a missing sensitive value (empty, NA, NaN, ?): refuse it, keep it as the group "
                        "'(missing)', or drop its row (default: error)")
    _add_overwrite(p)
    _add_progress(p, what="the progress bar")
    _add_out(p, help="cache file to write (.h5)")


def _info_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", type=Path)
    p.add_argument("--all-groups", action="store_true",
                   help="list every group, not only the largest (empty groups are never listed)")
    _add_json(p, "the provenance and every (split, group, label) count")


def _fit_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", type=Path)
    _add_fit_options(p)
    _add_fit_split(p, help="split the head is fit on")
    p.add_argument("--eval-split", nargs="+", default=None, help="splits to evaluate (default: all)")
    p.add_argument("--save", type=Path, help="where to save the head (.json or .npz; default: next to the cache)")
    _add_confidence(p)
    _add_memory(p)
    _add_json(p, "the head's certificate and every split's metrics")
    _add_progress(p, what="the progress bar")


def _sweep_parser(p: argparse.ArgumentParser) -> None:
    from fairhead.compare import BASELINES

    p.add_argument("cache", type=Path)
    _add_fit_options(p, eps_default=None)
    p.add_argument("--eps-grid", nargs="+", type=float,
                   help=f"eps values (default: {N_EPS_DEFAULT} points from inactive to 0; rate constraints: to the "
                        "resolution, the smallest gap one prediction can change)")
    _add_n_eps(p, default=None, help=f"grid size when --eps-grid is not given (default: {N_EPS_DEFAULT})")
    _add_fit_split(p, help="split the heads are fit on")
    p.add_argument("--compare", nargs="+", default=None, choices=BASELINES, metavar="NAME",
                   help="baselines to add, one or more of: " + " ".join(BASELINES)
                        + " (fairlearn's need pip install 'fairhead[compare]')")
    _add_out(p, help="report folder")
    _add_plots(p, what="the plots (tradeoff.png, fit_vs_test.png, ...)")
    _add_confidence(p)
    _add_memory(p)
    _add_progress(p, what="the progress bars (the path's heads, each baseline)")


def _select_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="the --out folder of `fairhead sweep`")
    p.add_argument("--target", required=True,
                   help="gap bound to certify: eo:0.05, or 'eo<=0.05' quoted (an unquoted < is a shell "
                        "redirection); gaps: dp, eo, eopp, ae")
    _add_confidence(p, help="confidence level (default: 0.95)")
    p.add_argument("--split", default="valid", help="certification split, never the fit split (default: valid)")
    p.add_argument("--method", choices=("fixed-sequence", "bonferroni"), default="fixed-sequence",
                   help="error control over the heads (default: fixed-sequence)")
    p.add_argument("--bound", choices=("exact", "union"), default="exact",
                   help="upper bound on each head's gap: exact (on each pairwise difference) or union "
                        "(per-group intervals) (default: exact)")
    p.add_argument("--cache", type=Path, help="the cache (default: the one the sweep recorded; its fingerprint "
                                              "must be the heads')")


def _protocols_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", type=Path)
    _add_fit_options(p)
    _add_sampling(p, seed_help="seed of B3/M2's group-balanced down-sampling")
    _add_out(p, required=False, help="write protocols.csv / protocols.json / overfitting.png here")
    _add_confidence(p)
    _add_progress(p, what="the progress bar over the five fits")
    _add_json(p, "protocols.json's content: every row and column, the notes, the provenance")


def _demo_parser(p: argparse.ArgumentParser) -> None:
    _add_out(p, required=False, default=Path("fairhead-demo"), help="output folder (default: fairhead-demo)")
    _add_sampling(p, n_help="images to generate (default: 3000)", seed_help="dataset seed")
    _add_n_eps(p, default=12, help="sweep grid size (default: 12)")
    p.add_argument("--no-compare", action="store_true", help="skip the fairlearn / penalty comparisons")
    p.add_argument("--full-network", action="store_true",
                   help="also fine-tune the whole network (penalty and Lagrangian, `fairhead finetune-full`'s "
                        "defaults: about 5 more minutes on 2 CPU cores) and put it beside the last-layer heads")
    _add_progress(p)


def _presets_parser(p: argparse.ArgumentParser) -> None:
    """``presets`` takes no options."""


def _finetune_full_parser(p: argparse.ArgumentParser) -> None:
    from fairhead.full_compare import MAX_EVAL, MAX_TRAIN, N_EPS
    from fairhead.full_objectives import DEFAULT_METHODS, METHODS, OPTIMIZERS

    p.add_argument("cache", type=Path, help="a cache built by `fairhead extract` (it records its images and backbone)")
    _add_fit_options(p)
    _add_out(p, help="report folder (checkpoints go to OUT/checkpoints)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS),
                   help="full-network objectives (default: penalty lagrangian)")
    rows = p.add_argument_group("rows")
    rows.add_argument("--max-train", type=COUNT, default=MAX_TRAIN,
                      help=f"train rows, a seeded subset; 0 = all (default: {MAX_TRAIN})")
    rows.add_argument("--max-eval", type=COUNT, default=MAX_EVAL,
                      help=f"valid and test rows each, a seeded subset; 0 = all (default: {MAX_EVAL})")
    _add_sampling(rows, seed_help="seed of the subsets, the batch order, the network's randomness and B3/M2's "
                                  "down-sampling")
    _add_n_eps(rows, default=N_EPS, help=f"bounds of the eps path (default: {N_EPS})")
    train = p.add_argument_group("full-network training")
    train.add_argument("--image-size", type=POSITIVE_INT, default=64, help="input size in pixels (default: 64)")
    train.add_argument("--epochs", type=POSITIVE_INT, default=3, help="most epochs (default: 3)")
    train.add_argument("--patience", type=POSITIVE_INT, default=2,
                       help="stop after this many epochs without a better validation objective (default: 2)")
    _add_batch_size(train, default=32, low=2, help="images per step (default: 32)")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="(default: adamw)")
    train.add_argument("--lr", type=float, default=1e-4, help="the backbone's learning rate (default: 1e-4)")
    train.add_argument("--head-lr", type=float, default=1e-3, help="the linear head's learning rate (default: 1e-3)")
    train.add_argument("--weight-decay", type=float, default=1e-2, help="(default: 0.01)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD's momentum (default: 0.9)")
    train.add_argument("--alpha", type=float, default=2.0, help="the penalty's weight (default: 2, the seed's)")
    train.add_argument("--dual-lr", type=float, default=0.5,
                       help="the Lagrangian's multiplier ascent step (default: 0.5)")
    _add_device(train)
    train.add_argument("--threads", type=POSITIVE_INT,
                       help="CPU threads, torch's and numpy's BLAS (default: half the cores)")
    train.add_argument("--workers", type=NONNEGATIVE_INT, default=0,
                       help="DataLoader worker processes decoding images (default: 0)")
    train.add_argument("--restart", action="store_true", help="ignore the checkpoints and train from the start")
    _add_weights_file(train)
    data = p.add_argument_group("images (default: where the cache says they are)")
    data.add_argument("--manifest", type=Path, metavar="CSV", help="the manifest, if it moved")
    data.add_argument("--root", type=Path, help="the manifest's image root, if it moved")
    data.add_argument("--celeba", type=Path, metavar="ROOT", help="the CelebA folder, if it moved")
    _add_confidence(p)
    _add_plots(p, what="gaps.png and the eps path's plots")
    _add_progress(p)


def _predict_parser(p: argparse.ArgumentParser) -> None:
    _add_head_file(p)
    which = p.add_argument_group("images (choose one)").add_mutually_exclusive_group(required=True)
    which.add_argument("--images", metavar="DIR", type=Path, help="a folder of images (recursive; no labels)")
    which.add_argument("--celeba", metavar="ROOT", type=Path, help="a CelebA-layout folder (labels and groups)")
    which.add_argument("--manifest", metavar="CSV", type=Path, help="a CSV manifest (labels and groups)")
    opts = p.add_argument_group("manifest / CelebA columns (default: the head's label and attributes)")
    opts.add_argument("--root", type=Path, help="image root of --manifest (default: the manifest's folder)")
    _add_manifest_columns(opts, target_help="label column / attribute", sensitive_help="sensitive columns / attributes",
                          split_col_help="manifest column holding the split name (default: none)")
    opts.add_argument("--split", nargs="+", metavar="NAME", help="only these splits (default: every row)")
    run = p.add_argument_group("backbone")
    _add_weights_file(run)
    _add_batch_size(run, default=64, help="images per forward pass (default: 64)")
    _add_device(run)
    _add_progress(run, what="the progress bar")
    _add_out(p, help="predictions CSV to write")


def _export_parser(p: argparse.ArgumentParser) -> None:
    from fairhead.export import FORMATS

    _add_head_file(p)
    p.add_argument("--to", choices=FORMATS, required=True,
                   help="sklearn (.joblib), linear (.pt), program (backbone + head, .pt2), onnx (backbone + head)")
    _add_weights_file(p, help="the weights file the cache was built with (program, onnx)")
    _add_out(p, help="file to write")


# --------------------------------------------------------------------------- help texts
class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (unless its help already says it, or there is none) and keeps the
    examples' line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


PROTOCOLS_DESCRIPTION = """The seed paper's five last-layer protocols. Each fits one head and evaluates it on
train, on the data it was fit on ("fine-tune") and on test:

  B1  the train split, unconstrained
  B2  the validation split, unconstrained
  B3  train + validation down-sampled (--seed) so every (label, group) cell has as many
      rows as the smallest one; unconstrained
  M1  B2's data with the fairness constraint (--constraint, --eps)
  M2  B3's data with the fairness constraint

constraint_value is the constraint's own bounded quantity (a rate gap for rate constraints,
a logit gap for score constraints), which M1 and M2 are fitted to keep within eps on their
fine-tune data; eps_met says whether they did (a head that misses it is named under the
table). When B3 already meets eps, M2's constraint is inactive and M2 is B3's head: the
table says so. With --out, protocols.json records the constraint, eps, seed, the cache's
fingerprint and the library versions."""

FINETUNE_FULL_EPILOG = """examples:
  fairhead finetune-full demo.h5 --constraint eo --eps 0.05 --out full/      # CPU default: about 5 min, 3000 images
  fairhead finetune-full celeba_r18.h5 --constraint eo --eps 0.05 --max-train 0 --max-eval 0 \\
                         --epochs 20 --batch-size 128 --device cuda --out full-celeba/   # the papers' setting, on a GPU

Trains the cache's backbone (rebuilt from the weights the cache records, checked by sha256) with a
linear head on the cache's images, end to end, for each --methods: penalty (the seed code's form,
loss + alpha * P), lagrangian (the same constraint and eps as the heads: descent on the weights,
projected ascent on the multipliers, gaps relaxed to probabilities), unconstrained. Beside them:
the last-layer protocols B1 B2 B3 M1 M2 and the eps path, fitted on the cache's features of the same
rows. Every model is evaluated on the same train, valid and test rows, with its wall time and peak
memory. A checkpoint is written after every epoch (--out/checkpoints/): rerun the same command after
a crash or Ctrl-C and training resumes where it stopped, to the same result."""

PREDICT_EPILOG = """examples:
  fairhead predict --head celeba.head-eo-0.05.json --images new_faces/ --out preds.csv
  fairhead predict --head celeba.head-eo-0.05.json --celeba /data/celeba --split test --out preds.csv
  fairhead predict --head xray.head-dp-0.05.json --manifest meta.csv --root images/ --image-col path \\
                   --weights-file my_finetuned.pt --out preds.csv

The head file records the cache's backbone (architecture, weights, their sha256, preprocessing);
predict rebuilds it and refuses weights whose sha256 differs. The CSV has one row per id: score
(the logit z), probability (sigmoid z, of the positive class), prediction (0/1) and the class name;
with labels (--celeba, --manifest) also the label, the groups, and group metrics with 0.95
intervals (printed and written to PREDS.metrics.json)."""

EXPORT_EPILOG = """examples:
  fairhead export --head head.json --to sklearn --out head.joblib   # a fitted LogisticRegression
  fairhead export --head head.json --to linear  --out head.pt       # torch.nn.Linear(d, 1) state_dict
  fairhead export --head head.json --to program --out model.pt2     # backbone + head, torch.export
  fairhead export --head head.json --to onnx    --out model.onnx    # backbone + head (pip install "fairhead[onnx]")

Every export gives the head's scores: sklearn's decision_function, the Linear's output on
float64 features, and the full models' output on images preprocessed by the backbone's transform."""

#: one example per command, shown under its --help
EPILOGS = {
    "extract": """examples:
  fairhead extract --synthetic --n 3000 --seed 0 --out synthetic.h5
  fairhead extract --backbone resnet50 --weights IMAGENET1K_V2 --celeba /data/celeba --out celeba_r50.h5
  fairhead extract --preset celeba-blond-male --root /data/celeba --backbone resnet50 --weights DEFAULT --out c.h5
  fairhead extract --manifest meta.csv --root images/ --image-col path --target label --sensitive sex \\
                   --backbone convnext_tiny --weights-file my_finetuned.pt --out xray.h5
  torchrun --nproc-per-node 4 -m fairhead extract --celeba /data/celeba --backbone resnet50 --out c.h5
      (one shard per process, merged by rank 0 into the single-process cache; docs/guide.md: Distributed extraction)""",
    "generate": "example:\n  fairhead generate --out shapes/ --n 3000 --seed 0"
                "   # then: fairhead extract --manifest shapes/manifest.csv ...",
    "import": "example:\n  fairhead import adult.parquet --label income --sensitive sex --out adult.h5",
    "info": "example:\n  fairhead info celeba_r50.h5",
    "fit": """examples:
  fairhead fit celeba_r50.h5 --constraint eo --eps 0.05 --eval-split valid test
  fairhead fit adult.h5 --constraint dp-score --eps 0.1 --pos-label '>50K' --save adult-head.json""",
    "sweep": "example:\n  fairhead sweep celeba_r50.h5 --constraint dp --compare expgrad threshold penalty"
             " --out sweep-dp/",
    "protocols": "example:\n  fairhead protocols celeba_r50.h5 --constraint eo --eps 0.05 --out protocols/",
    "select": """examples:
  fairhead select sweep-eo/ --target eo:0.05 --confidence 0.95 --split valid
  fairhead select sweep-eo/ --target 'eo<=0.05'     # the same target; quote it, < is a shell redirection
exit status: 0 a head is certified; 5 it abstains (selection.json is written either way); 3 bad input""",
    "demo": "example:\n  fairhead demo --out fairhead-demo",
    "presets": "example:\n  fairhead presets   # then: fairhead extract --preset NAME --root DIR ...",
    "finetune-full": FINETUNE_FULL_EPILOG,
    "predict": PREDICT_EPILOG,
    "export": EXPORT_EPILOG,
}
#: a longer description above a command's options
DESCRIPTIONS = {"protocols": PROTOCOLS_DESCRIPTION}


# --------------------------------------------------------------------------- handlers
def _cmd_extract(args: argparse.Namespace) -> int:
    from fairhead import pipeline

    path = pipeline.extract_cache(
        pipeline.source_from_args(args),
        backbone=args.backbone, weights=args.weights, weights_file=args.weights_file,
        image_size=args.image_size, autocast=args.autocast, out=args.out, batch_size=args.batch_size,
        num_workers=args.workers, device=args.device,
        feature_dtype=args.dtype, overwrite=args.overwrite, progress=not args.no_progress, merge=not args.no_merge,
    )
    if path is not None:  # under torchrun only rank 0 has the finished cache
        print(pipeline.describe_cache(path))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from fairhead import pipeline

    manifest = pipeline.generate_dataset(
        args.out, n=args.n, seed=args.seed, correlation=args.correlation,
        minority_fraction=args.minority_fraction,
    )
    print(f"wrote {args.n} images and the manifest {manifest}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from fairhead import pipeline

    path = pipeline.import_features(
        args.table, label=args.label, sensitive=args.sensitive, features=args.features,
        split=args.split, id_col=args.id_col, out=args.out, feature_dtype=args.dtype,
        overwrite=args.overwrite, sensitive_missing=args.sensitive_missing, progress=not args.no_progress,
    )
    print(pipeline.describe_cache(path))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from fairhead import pipeline

    if args.json:
        print(json.dumps(pipeline.cache_info(args.cache), indent=1, allow_nan=False))
        return 0
    print(pipeline.describe_cache(args.cache, max_groups=None if args.all_groups else pipeline.INFO_MAX_GROUPS))
    return 0


def _eps(args: argparse.Namespace) -> float:
    """``--eps``, refused where the constraint has no bound (it would be ignored without a word)."""
    if args.eps is not None and args.constraint in UNBOUNDED_CONSTRAINTS:
        raise DataError(f"--constraint {args.constraint} has no bound, so --eps would be ignored; drop --eps")
    return EPS_DEFAULT if args.eps is None else args.eps


def _head_params(args: argparse.Namespace) -> dict:
    """The head options of a command, every one checked before the cache is read: the device by
    :func:`_check_options`, the numbers (``--eps``, ``--C``, ``--min-group-size``) by the head's own
    parameter validator, so the message is the one Python gives (``The 'eps' parameter of FairHead
    ...``)."""
    from solvers._validation import validate_params
    from solvers.head import FairHead

    params = dict(
        constraint=None if args.constraint == "none" else args.constraint,
        C=args.C, backend=args.backend,
        balance=None if args.balance == "none" else args.balance,
        device=args.solver_device, min_group_size=args.min_group_size,
    )
    eps = _eps(args) if hasattr(args, "eps") else EPS_DEFAULT  # sweep: its grid is checked by run_sweep first
    validate_params(FairHead(eps=eps, **params))
    return dict(params, pos_label=args.pos_label)


def _cmd_fit(args: argparse.Namespace) -> int:
    from fairhead import data_parallel, pipeline

    with data_parallel.launched("fit", args.solver_device) as parallel:  # torchrun: each rank a share of the rows
        result = pipeline.fit_on_cache(
            args.cache, fit_split=args.fit_split, eval_splits=args.eval_split,
            attributes=args.attributes, eps=_eps(args), save=args.save, confidence=args.confidence,
            max_memory=args.max_memory, parallel=parallel, progress=not args.no_progress, **_head_params(args),
        )
    if data_parallel.writes(parallel):
        print(json.dumps(result.to_json(), indent=1, allow_nan=False) if args.json else result.summary())
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from fairhead import sweep

    if args.eps_grid is not None and args.n_eps is not None:
        raise DataError("--eps-grid and --n-eps both set the grid; pass one of them")
    unbounded = args.constraint in CONSTRAINT_CLASSES and not CONSTRAINT_CLASSES[args.constraint].bounded
    if unbounded and args.n_eps is not None:
        raise DataError(f"constraint {args.constraint!r} has no bound to sweep (it fits one head); drop --n-eps")
    from fairhead import data_parallel

    if args.compare:  # before joining the ranks: one line, not one per rank after a rendezvous
        data_parallel.check_in_memory_baselines(args.compare)
    with data_parallel.launched("sweep", args.solver_device) as parallel:  # torchrun: each rank a share of the rows
        result = sweep.run_sweep(
            args.cache, out=args.out, eps_grid=args.eps_grid,
            n_eps=N_EPS_DEFAULT if args.n_eps is None else args.n_eps,
            fit_split=args.fit_split, attributes=args.attributes, compare=args.compare,
            plots=not args.no_plots, confidence=args.confidence, max_memory=args.max_memory, parallel=parallel,
            progress=not args.no_progress,
            **_head_params(args),
        )
    if data_parallel.writes(parallel):
        print(result.summary())
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from fairhead import certify

    sel = certify.select_from_sweep(args.sweep_dir, target=args.target, confidence=args.confidence,
                                    split=args.split, method=args.method, cache=args.cache, bound=args.bound)
    print(certify.selection_summary(sel, args.sweep_dir))
    return EXIT_ABSTAINED if sel.abstained else 0


def _cmd_protocols(args: argparse.Namespace) -> int:
    from fairhead import protocols

    table = protocols.run_protocols(
        args.cache, attributes=args.attributes, eps=_eps(args), seed=args.seed, out=args.out,
        confidence=args.confidence, progress=not args.no_progress, **_head_params(args),
    )
    print(json.dumps(table.to_json(), indent=1, allow_nan=False) if args.json else table.to_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from fairhead import demo

    demo.run_demo(
        args.out, n=args.n, seed=args.seed, n_eps=args.n_eps, compare=not args.no_compare,
        progress=not args.no_progress, full_network=args.full_network,
    )
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from fairhead import presets

    for name, preset in presets.list_presets().items():
        print(f"{name:24s} {preset['description']}")
    return 0


# --------------------------------------------------------------------------- finetune-full


def _positive(value: float, flag: str) -> float:
    if not (value > 0 and value < float("inf")):
        raise DataError(f"{flag} must be a positive number; got {value!r}")
    return value


def _nonnegative(value: float, flag: str) -> float:
    if not (value >= 0 and value < float("inf")):
        raise DataError(f"{flag} must be a number >= 0; got {value!r}")
    return value


def _fraction(value: float, flag: str) -> float:
    if not 0 <= value < 1:  # SGD diverges with momentum >= 1
        raise DataError(f"{flag} must be a number in [0, 1), e.g. 0.9; got {value!r}")
    return value


def _cmd_finetune_full(args: argparse.Namespace) -> int:
    from fairhead.full_compare import NetworkOptions, run_full_comparison

    params = _head_params(args)
    options = NetworkOptions(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=_positive(args.lr, "--lr"), head_lr=_positive(args.head_lr, "--head-lr"),
        weight_decay=_nonnegative(args.weight_decay, "--weight-decay"), momentum=_fraction(args.momentum, "--momentum"),
        alpha=_nonnegative(args.alpha, "--alpha"), dual_lr=_positive(args.dual_lr, "--dual-lr"),
        patience=args.patience, image_size=args.image_size, device=args.device, threads=args.threads,
        workers=args.workers)
    result = run_full_comparison(
        args.cache, out=args.out, constraint=params["constraint"], eps=_eps(args), methods=args.methods,
        attributes=args.attributes, pos_label=args.pos_label, max_train=args.max_train, max_eval=args.max_eval,
        n_eps=args.n_eps, seed=args.seed, options=options, C=args.C, backend=args.backend, balance=params["balance"],
        solver_device=params["device"], min_group_size=args.min_group_size, confidence=args.confidence,
        progress=not args.no_progress, restart=args.restart, manifest=args.manifest, root=args.root,
        celeba=args.celeba, weights_file=args.weights_file, plots=not args.no_plots)
    print(result.summary())
    return 0


# --------------------------------------------------------------------------- predict / export



def _predict_source(args: argparse.Namespace, head_extra: dict):
    from embedcache import sources

    from fairhead.predict import ImageFolder

    if args.images:
        return ImageFolder(args.images)
    label = (head_extra.get("label") or {}).get("name")
    sensitive = tuple(args.sensitive or head_extra.get("attributes") or ())
    if args.celeba:
        from fairhead import pipeline

        return sources.CelebASource(args.celeba, target=args.target or label or pipeline.CELEBA_TARGET_DEFAULT,
                                    sensitive=sensitive or pipeline.CELEBA_SENSITIVE_DEFAULT)
    return sources.ManifestSource(args.manifest, root=args.root, image_col=args.image_col,
                                  label_col=args.target or label, sensitive_cols=sensitive,
                                  split_col=args.split_col, id_col=args.id_col)


def _cmd_predict(args: argparse.Namespace) -> int:
    from fairhead import predict
    from solvers import load_head
    from solvers.head import FairHead

    predict.check_prediction_targets(args.out, inputs={
        "the --head file": args.head, "the --weights-file": args.weights_file, "the --manifest": args.manifest})
    extra = getattr(load_head(args.head, head_type=FairHead), "extra_", None) or {}
    result = predict.predict_images(
        args.head, _predict_source(args, extra), weights_file=args.weights_file, splits=args.split,
        batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
    )
    _, metrics_path = predict.write_predictions(result, args.out)
    print(result.summary())
    print(f"wrote {args.out}" + (f" and {metrics_path}" if metrics_path else ""))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from fairhead.export import export_head

    path = export_head(args.head, args.out, fmt=args.to, weights_file=args.weights_file)
    print(f"wrote {path}")
    if args.to == "onnx":
        from fairhead.export import export_sidecars

        for sidecar in export_sidecars(path):  # the weights beside the graph: both must travel together
            print(f"wrote {sidecar} (the model's weights, read by {path.name}: keep the two files together)")
    return 0


# --------------------------------------------------------------------------- the command table
@dataclass(frozen=True)
class Command:
    """One ``fairhead`` command: its name, its one-line help, the function that adds its options, its handler."""

    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


#: every command, in the order ``fairhead --help`` lists them
COMMANDS = (
    Command("extract", "run a frozen backbone once over a dataset into an HDF5 cache", _extract_parser, _cmd_extract),
    Command("generate", "write the generated default dataset as PNG files + CSV manifest", _generate_parser,
            _cmd_generate),
    Command("import", "write already-computed features (CSV, Parquet, .npz) into a cache", _import_parser,
            _cmd_import),
    Command("info", "print a cache's provenance and its split x label x group counts", _info_parser, _cmd_info),
    Command("fit", "fit one fair head on a cache split and evaluate it on others", _fit_parser, _cmd_fit),
    Command("sweep", "sweep eps for a constraint and report accuracy vs fairness on every split", _sweep_parser,
            _cmd_sweep),
    Command("select", "certify the most accurate head of a sweep on a held-out split, or abstain", _select_parser,
            _cmd_select),
    Command("protocols", "run the seed paper's B1 B2 B3 M1 M2 protocols on a cache", _protocols_parser,
            _cmd_protocols),
    Command("finetune-full", "fine-tune the whole network with the fairness term, beside the last-layer heads "
                             "(train/valid/test gaps, time, memory)", _finetune_full_parser, _cmd_finetune_full),
    Command("demo", "the whole pipeline offline on the embedded default data and backbone", _demo_parser, _cmd_demo),
    Command("presets", "list the named dataset presets", _presets_parser, _cmd_presets),
    Command("predict", "run a saved head (and its cache's backbone) on new images", _predict_parser, _cmd_predict),
    Command("export", "export a head to scikit-learn, torch.nn.Linear, torch.export or ONNX", _export_parser,
            _cmd_export),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``fairhead`` parser: one subparser per row of :data:`COMMANDS`, with its help texts.

    ``command`` (the one being run) gets its options and the others only their names and help:
    some commands' options import their modules for their choices and defaults (``sweep``
    imports the baselines, ``finetune-full`` the full-network trainer's), which a ``fit`` does
    not need to pay for."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Fair last-layer fine-tuning: cache features once, fit exact fair heads, sweep tightness.",
        epilog="run `fairhead COMMAND --help` for a command's options and examples",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of known errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for row in COMMANDS:
        p = sub.add_parser(row.name, help=row.help, formatter_class=HelpFormatter,
                           description=DESCRIPTIONS.get(row.name), epilog=EPILOGS.get(row.name))
        if command is None or row.name == command:
            row.build(p)
        p.set_defaults(handler=row.handler)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option (the top-level options take
    no value), when that is a command's name."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in {c.name for c in COMMANDS} else None


def _check_options(args: argparse.Namespace) -> None:
    """The checks the shared options registered (:func:`_check_before_work`), before the command's work."""
    for dest, check in getattr(args, "option_checks", ()):
        value = getattr(args, dest, None)
        if value is not None:
            check(value)


# --------------------------------------------------------------------------- errors in the user's words
#: the Python parameters that library messages name (in backticks, `` `batch_size` `` or `` `batch_size=64` ``)
#: and the flag a command-line user types for each; a key ``name=value`` maps that one setting
PARAMETER_FLAGS = {
    "backbone": "--backbone", "batch_size": "--batch-size", "confidence": "--confidence", "device": "--device",
    "eps": "--eps", "feature_dtype": "--dtype", "features": "--features", "image_size": "--image-size",
    "max_memory": "--max-memory", "merge=False": "--no-merge", "min_group_size": "--min-group-size",
    "num_workers": "--workers", "out": "--out", "overwrite": "--overwrite", "root": "--root",
    "sensitive_missing": "--sensitive-missing", "weights": "--weights", "weights_file": "--weights-file",
}
_PARAMETER = re.compile(r"`(?P<name>[a-z][a-z0-9_]*)(?:=(?P<value>[^`]*))?`")


def as_flags(message: str) -> str:
    """``message`` with the parameters it names in backticks written as this command line's flags:
    `` `batch_size=64` `` -> ``--batch-size 64``, `` `overwrite=True` `` -> ``--overwrite``,
    `` `min_group_size` `` -> ``--min-group-size``; a name the table does not know is left as it is."""
    def flag(match: re.Match) -> str:
        name, value = match.group("name"), match.group("value")
        if f"{name}={value}" in PARAMETER_FLAGS:
            return PARAMETER_FLAGS[f"{name}={value}"]
        if name not in PARAMETER_FLAGS:
            return match.group(0)
        if value is None or value == "True":
            return PARAMETER_FLAGS[name]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return f"{PARAMETER_FLAGS[name]} {value}"
    return _PARAMETER.sub(flag, message)


def _print_error(message, debug: bool) -> None:
    """The one line a known error prints (``--debug``: after its traceback), in the command line's words."""
    if debug:
        traceback.print_exc()
    print(f"{PROG}: error: {as_flags(str(message))}", file=sys.stderr)


# --------------------------------------------------------------------------- entry point
def _other_rank_of_fit(args) -> bool:
    """A torchrun rank other than 0 in a data-parallel fit or sweep (it leaves printing to rank 0)."""
    from fairhead.data_parallel import COMMANDS

    return (args.command in COMMANDS
            and os.environ.get("WORLD_SIZE", "1") != "1" and os.environ.get("RANK", "0") != "0")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    try:
        if args.command != "extract":  # extract shards images, fit and sweep rows; the rest run in one process
            from fairhead.data_parallel import check_command

            check_command(args.command)
        _check_options(args)
        return args.handler(args)
    except FairheadError as err:
        if _other_rank_of_fit(args):
            return err.exit_code  # every rank meets the same error; rank 0 prints it
        if not getattr(err, "reported_by_rank_0", False):  # under torchrun, rank 0 prints what all ranks share
            _print_error(err, args.debug)
        return err.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except OSError as err:  # a full disk, a read-only folder, a missing folder: the user's to fix, not a bug
        from fairhead_io import os_error_message

        if not getattr(err, "reported_by_rank_0", False):
            _print_error(os_error_message(err), args.debug)
        return DataError.exit_code
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; rerun the same command to resume from what was committed",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug: show everything so it can be reported
        from fairhead.data_parallel import peer_failure

        lost = peer_failure(err)  # under torchrun: another rank was killed mid-collective, not a bug here
        if lost is not None:
            _print_error(lost, args.debug)
            return DataError.exit_code
        traceback.print_exc()
        print(f"{PROG}: unexpected error (a bug); please report it with the traceback above",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
