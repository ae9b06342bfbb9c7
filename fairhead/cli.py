"""The ``fairhead`` command line: argument parsing, dispatch and exit codes.

Each subcommand is a thin wrapper over :mod:`fairhead.pipeline` (and the
stage modules it calls), so everything the CLI does is also a Python call.

Exit codes, one per family (as pip does):

==== =====================================================
0    success
1    unexpected error (a bug: the traceback is printed, please report it)
2    usage error (argparse)
3    bad data, cache or backbone (:class:`DataError`, :class:`CacheError`, :class:`BackboneError`)
4    infeasible constraint or solver failure
130  interrupted (Ctrl-C); extraction and sweeps resume when rerun
==== =====================================================

Known errors print one line, ``fairhead: error: <message>``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from fairhead_errors import FairheadError

PROG = "fairhead"
EXIT_INTERRUPTED = 130

SCORE_CONSTRAINTS = ("dp-score", "eopp-score", "eo-score", "cov", "group-loss", "minimax")
RATE_CONSTRAINTS = ("dp", "eopp", "eo", "error-rate")
CONSTRAINTS = RATE_CONSTRAINTS + SCORE_CONSTRAINTS


# --------------------------------------------------------------------------- parsers
def _add_source_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data source (choose one)")
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
    group.add_argument("--target", help="target attribute (CelebA) or label column (manifest)")
    group.add_argument("--sensitive", nargs="+", metavar="NAME", help="sensitive attribute(s) / column(s)")
    group.add_argument("--image-col", default="path", help="manifest column holding image paths (default: path)")
    group.add_argument("--split-col", help="manifest column holding the split name (default: none, hashed split)")
    group.add_argument("--id-col", help="manifest column holding sample ids (default: the image path)")
    synth = parser.add_argument_group("generated dataset (--synthetic)")
    synth.add_argument("--n", type=int, default=3000, help="number of images (default: 3000)")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    synth.add_argument("--correlation", type=float, default=0.8,
                       help="P(label agrees with the sensitive attribute) (default: 0.8)")
    synth.add_argument("--minority-fraction", type=float, default=0.3,
                       help="share of the smaller sensitive group (default: 0.3)")


def _add_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument("--backbone", default="efficientnet_lite0",
                       help="backbone name: efficientnet_lite0 (offline default) or any torchvision "
                            "classification model (resnet50, vit_b_16, convnext_tiny, ...)")
    group.add_argument("--weights", help="torchvision weights name, e.g. IMAGENET1K_V2 or DEFAULT "
                                         "(with --weights-file: that name's preprocessing, offline)")
    group.add_argument("--weights-file", type=Path, help="local state_dict for the same architecture "
                                                         "(torchvision's file or your fine-tuned checkpoint)")
    group.add_argument("--image-size", type=int, help="input size (default: the weights' own preprocessing)")
    group.add_argument("--autocast", choices=("auto", "off", "bf16", "fp16"), default="auto",
                       help="mixed precision on CUDA (default: bf16 where supported; always off on CPU)")
    group.add_argument("--batch-size", type=int, default=64)
    group.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: auto)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    group.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored feature dtype")
    group.add_argument("--overwrite", action="store_true", help="replace a cache built from something else")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_fit_options(parser: argparse.ArgumentParser, *, eps_default: float | None = 0.05) -> None:
    group = parser.add_argument_group("fair head")
    group.add_argument("--constraint", default="dp", choices=CONSTRAINTS + ("none",),
                       help="rate: " + ", ".join(RATE_CONSTRAINTS) + "; score: " + ", ".join(SCORE_CONSTRAINTS))
    if eps_default is not None:
        group.add_argument("--eps", type=float, default=eps_default, help="constraint tolerance (default: 0.05)")
    group.add_argument("--C", type=float, default=1.0, help="inverse L2 strength, scikit-learn's meaning (default: 1)")
    group.add_argument("--backend", choices=("auto", "torch", "cvxpy"), default="auto")
    group.add_argument("--balance", choices=("none", "group", "label-group"), default="none",
                       help="reweight so every group / (label, group) cell has equal total weight")
    group.add_argument("--attributes", nargs="+", metavar="NAME",
                       help="sensitive attributes to constrain (default: all in the cache; several -> intersectional)")
    group.add_argument("--solver-device", default="cpu", help="torch backend device (cpu or cuda)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fair last-layer fine-tuning: cache features once, fit exact fair heads, sweep tightness.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of known errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("extract", help="run a frozen backbone once over a dataset into an HDF5 cache")
    _add_source_options(p)
    _add_backbone_options(p)
    p.add_argument("--out", type=Path, required=True, help="cache file to write (.h5)")
    p.set_defaults(handler=_cmd_extract)

    p = sub.add_parser("generate", help="write the generated default dataset as JPEG files + CSV manifest")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--correlation", type=float, default=0.8)
    p.add_argument("--minority-fraction", type=float, default=0.3)
    p.set_defaults(handler=_cmd_generate)

    p = sub.add_parser("import", help="write already-computed features (CSV, Parquet, .npz) into a cache")
    p.add_argument("table", type=Path, help="CSV, Parquet or .npz file")
    p.add_argument("--label", required=True, help="label column (binary)")
    p.add_argument("--sensitive", nargs="+", required=True, help="sensitive column(s)")
    p.add_argument("--features", nargs="+", help="feature columns (default: every other numeric column)")
    p.add_argument("--split", help="split column (default: a deterministic hashed train/valid/test split)")
    p.add_argument("--id-col", help="sample id column (default: row number)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out", type=Path, required=True, help="cache file to write (.h5)")
    p.set_defaults(handler=_cmd_import)

    p = sub.add_parser("info", help="print a cache's provenance and its split x label x group counts")
    p.add_argument("cache", type=Path)
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("fit", help="fit one fair head on a cache split and evaluate it on others")
    p.add_argument("cache", type=Path)
    _add_fit_options(p)
    p.add_argument("--fit-split", default="train")
    p.add_argument("--eval-split", nargs="+", default=None, help="splits to evaluate (default: all)")
    p.add_argument("--save", type=Path, help="where to save the head (.json or .npz; default: next to the cache)")
    p.add_argument("--confidence", type=float, default=0.95, help="level of every interval (default: 0.95)")
    p.set_defaults(handler=_cmd_fit)

    p = sub.add_parser("sweep", help="sweep eps for a constraint and report accuracy vs fairness on every split")
    p.add_argument("cache", type=Path)
    _add_fit_options(p, eps_default=None)
    p.add_argument("--eps-grid", nargs="+", type=float, help="eps values (default: 20 points from inactive to 0)")
    p.add_argument("--n-eps", type=int, default=20, help="grid size when --eps-grid is not given")
    p.add_argument("--fit-split", default="train")
    p.add_argument("--compare", nargs="*", default=None,
                   help="baselines to add: expgrad gridsearch threshold penalty (needs fairlearn for the first three)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--confidence", type=float, default=0.95, help="level of every interval (default: 0.95)")
    p.set_defaults(handler=_cmd_sweep)

    p = sub.add_parser("select", help="certify the most accurate head of a sweep on a held-out split, or abstain")
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="the --out folder of `fairhead sweep`")
    p.add_argument("--target", required=True, help="gap bound to certify, e.g. eo<=0.05 (gaps: dp, eo, eopp, ae)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level (default: 0.95)")
    p.add_argument("--split", default="valid", help="certification split, never the fit split (default: valid)")
    p.add_argument("--method", choices=("fixed-sequence", "bonferroni"), default="fixed-sequence",
                   help="error control over the heads (default: fixed-sequence)")
    p.add_argument("--cache", type=Path, help="the cache (default: the one the sweep recorded)")
    p.set_defaults(handler=_cmd_select)

    p = sub.add_parser("protocols", help="run the seed paper's B1 B2 B3 M1 M2 protocols on a cache")
    p.add_argument("cache", type=Path)
    _add_fit_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of B3/M2's group-balanced down-sampling")
    p.add_argument("--out", type=Path, help="write protocols.csv / protocols.json here")
    p.add_argument("--confidence", type=float, default=0.95, help="level of every interval (default: 0.95)")
    p.set_defaults(handler=_cmd_protocols)

    p = sub.add_parser("demo", help="the whole pipeline offline on the embedded default data and backbone")
    p.add_argument("--out", type=Path, default=Path("fairhead-demo"), help="output folder (default: fairhead-demo)")
    p.add_argument("--n", type=int, default=3000, help="images to generate (default: 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-eps", type=int, default=12, help="sweep grid size (default: 12)")
    p.add_argument("--no-compare", action="store_true", help="skip the fairlearn / penalty comparisons")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("presets", help="list the named dataset presets")
    p.set_defaults(handler=_cmd_presets)
    return parser


# --------------------------------------------------------------------------- handlers
def _cmd_extract(args: argparse.Namespace) -> int:
    from fairhead import pipeline

    path = pipeline.extract_cache(
        pipeline.source_from_args(args),
        backbone=args.backbone, weights=args.weights, weights_file=args.weights_file,
        image_size=args.image_size, autocast=args.autocast, out=args.out, batch_size=args.batch_size, num_workers=args.workers, device=args.device,
        feature_dtype=args.dtype, overwrite=args.overwrite, progress=not args.no_progress,
    )
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
        overwrite=args.overwrite,
    )
    print(pipeline.describe_cache(path))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from fairhead import pipeline

    print(pipeline.describe_cache(args.cache))
    return 0


def _head_params(args: argparse.Namespace) -> dict:
    return dict(
        constraint=None if args.constraint == "none" else args.constraint,
        C=args.C, backend=args.backend,
        balance=None if args.balance == "none" else args.balance,
        device=args.solver_device,
    )


def _cmd_fit(args: argparse.Namespace) -> int:
    from fairhead import pipeline

    result = pipeline.fit_on_cache(
        args.cache, fit_split=args.fit_split, eval_splits=args.eval_split,
        attributes=args.attributes, eps=args.eps, save=args.save, confidence=args.confidence,
        **_head_params(args),
    )
    print(result.summary())
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from fairhead import sweep

    result = sweep.run_sweep(
        args.cache, out=args.out, eps_grid=args.eps_grid, n_eps=args.n_eps,
        fit_split=args.fit_split, attributes=args.attributes, compare=args.compare,
        plots=not args.no_plots, confidence=args.confidence, **_head_params(args),
    )
    print(result.summary())
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from fairhead import certify

    sel = certify.select_from_sweep(args.sweep_dir, target=args.target, confidence=args.confidence,
                                    split=args.split, method=args.method, cache=args.cache)
    print(certify.selection_summary(sel, args.sweep_dir))
    return 0


def _cmd_protocols(args: argparse.Namespace) -> int:
    from fairhead import protocols

    table = protocols.run_protocols(
        args.cache, attributes=args.attributes, eps=args.eps, seed=args.seed, out=args.out,
        confidence=args.confidence, **_head_params(args),
    )
    print(table.to_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from fairhead import demo

    demo.run_demo(
        args.out, n=args.n, seed=args.seed, n_eps=args.n_eps, compare=not args.no_compare,
        progress=not args.no_progress,
    )
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from fairhead import presets

    for name, preset in presets.list_presets().items():
        print(f"{name:24s} {preset['description']}")
    return 0


# --------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except FairheadError as err:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; rerun the same command to resume from what was committed",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug: show everything so it can be reported
        traceback.print_exc()
        print(f"{PROG}: unexpected error (a bug); please report it with the traceback above",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
