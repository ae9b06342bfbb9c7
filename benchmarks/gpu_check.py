"""The GPU check: extraction, CelebA-scale heads and a 20-point sweep on CUDA against CPU, in one run.

Measured side by side in one process (``benchmarks/gpu_check.sh`` runs it with a time limit):

1. **extraction** (ResNet-50 at 224 px, seeded random weights: the arithmetic of the pretrained
   network, without a download): the bare forward pass in images/s with and without bf16 autocast
   on the accelerator and on the CPU, then ``embedcache.extract`` end to end (JPEG files ->
   DataLoader -> backbone -> journal -> HDF5) with and without autocast;
2. **heads** on a CelebA-scale table (162,770 x 2,048 float32 embedding-like features, 2 groups):
   ``dp-score``, ``dp`` and ``eo`` fitted with the torch backend on the accelerator and on the CPU,
   timed cold (CUDA context already up), with the two heads compared (coefficients, accuracy, the
   constraint's value on the fit rows) so that a wrong CUDA path shows as a number, not a crash;
3. **sweep**: ``fit_path`` over 20 ``eo`` bounds on the accelerator, then the whole CLI command
   (``python -m fairhead sweep --constraint eo --solver-device cuda``) on the same table imported
   into a cache, wall time included imports and plots.

Every section writes its figures into one JSON file as soon as it ends (``--json``), so a run cut
short by its time limit still reports what it measured. ``--tiny`` shrinks every size so that the
whole script runs on a CPU in under a minute (the test suite runs it that way, so it cannot rot).

Usage::

    bash benchmarks/gpu_check.sh                 # on a GPU machine: full sizes, JSON to benchmarks/results/
    python benchmarks/gpu_check.py --tiny --device cpu --json /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

FULL = dict(extract_images=8192, unique_images=2048, extract_cpu_images=128, forward_batches=12, batch_size=256, source_px=224,
            n_rows=162_770, n_features=2048, cpu_heads=("dp-score", "dp", "eo"), sweep_points=20)
TINY = dict(extract_images=48, unique_images=24, extract_cpu_images=16, forward_batches=2, batch_size=16, source_px=64,
            n_rows=3000, n_features=32, cpu_heads=("dp-score", "dp", "eo"), sweep_points=4)
HEAD_EPS = {"dp-score": 0.01, "dp": 0.05, "eo": 0.05}
GOALS = {"celeba_head_s": 1.0, "sweep_20_s": 10.0, "resnet50_autocast_img_per_s": 2000.0}


class Report:
    """One JSON document, rewritten after every section (a cut-short run keeps what it measured)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = {"benchmark": "gpu_check", "sections_failed": []}

    def section(self, name: str, fn) -> None:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            self.data[name] = fn()
        except Exception as err:  # one broken section must not hide the others' figures
            traceback.print_exc()
            self.data[name] = {"error": f"{type(err).__name__}: {err}"}
            self.data["sections_failed"].append(name)
        self.data.setdefault("section_seconds", {})[name] = round(time.perf_counter() - start, 2)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")
        tmp.replace(self.path)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict:
    from embedcache.store.writer import library_versions

    env = {"device": str(device), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
           "python": platform.python_version(), "versions": library_versions()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}")
    return env


# -- 1. extraction -------------------------------------------------------------------------------

def forward_rate(backbone, batch: torch.Tensor, device: torch.device, *, repeats: int, autocast: bool) -> float:
    """Images/s of the bare forward pass on one preprocessed batch already on ``device``."""
    backbone.model.to(device)
    model_batch = batch.to(device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(2):  # warm-up: cuDNN's algorithm choice, the allocator
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                backbone.forward_features(model_batch).float().cpu()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                features = backbone.forward_features(model_batch)
            features.float().cpu()  # the extractor brings every batch back to the host too
        synchronize(device)
    return repeats * len(batch) / (time.perf_counter() - start)


def end_to_end_rate(source, backbone, out: Path, *, device: str, batch_size: int, autocast: str) -> float:
    """Images/s of ``embedcache.extract`` into a fresh cache (decode, forward, journal, HDF5)."""
    import embedcache

    start = time.perf_counter()
    embedcache.extract(source, backbone, out, batch_size=batch_size, device=device, autocast=autocast,
                       progress=False, overwrite=True)
    elapsed = time.perf_counter() - start
    out.unlink()
    return len(source) / elapsed


def repeated_manifest(manifest: Path, rows: int) -> Path:
    """The generated manifest's image files listed again under new ids until it has ``rows`` rows.

    Every row is still decoded from its JPEG file; only writing the files is saved (a run that
    lasts a few seconds per pass would otherwise measure the loader's start-up).
    """
    with open(manifest, newline="", encoding="utf-8") as fh:
        header, *body = list(csv.reader(fh))
    out = manifest.with_name("repeated.csv")
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for k in range(rows):
            row = list(body[k % len(body)])
            row[header.index("id")] = f"{row[header.index('id')]}-{k // len(body)}"
            writer.writerow(row)
    return out


def extraction(sizes: dict, device: torch.device, tmp: Path) -> dict:
    import embedcache
    from embedcache.sources import ManifestSource, write_synthetic_dataset

    torch.manual_seed(0)
    backbone = embedcache.build_backbone("resnet50", weights="none")
    start = time.perf_counter()
    manifest = write_synthetic_dataset(tmp / "images", n=sizes["unique_images"], seed=0,
                                       image_size=sizes["source_px"], image_format="jpeg")
    manifest = repeated_manifest(manifest, sizes["extract_images"])
    generate_s = time.perf_counter() - start
    source = ManifestSource(manifest, label_col="shape", sensitive_cols="background", split_col="split", id_col="id")
    bs = sizes["batch_size"]
    batch = torch.stack([backbone.transform(source.load_image(i % len(source))) for i in range(bs)])
    out: dict = {"backbone": "resnet50 (random weights)", "crop_px": int(batch.shape[-1]), "images": len(source),
                 "unique_image_files": sizes["unique_images"],
                 "source_jpeg_px": sizes["source_px"], "batch_size": bs, "images_generated_s": round(generate_s, 1)}
    cpu = torch.device("cpu")
    cpu_batch = batch[: min(bs, sizes["extract_cpu_images"])]
    out["cpu_forward_img_per_s"] = forward_rate(backbone, cpu_batch, cpu, repeats=1, autocast=False)
    if device.type != "cpu":
        out["forward_fp32_img_per_s"] = forward_rate(backbone, batch, device, repeats=sizes["forward_batches"],
                                                     autocast=False)
        out["forward_bf16_img_per_s"] = forward_rate(backbone, batch, device, repeats=sizes["forward_batches"],
                                                     autocast=True)
        out["forward_bf16_over_cpu"] = out["forward_bf16_img_per_s"] / out["cpu_forward_img_per_s"]
    for autocast in ("bf16", "off") if device.type != "cpu" else ("off",):
        key = f"end_to_end_{'bf16' if autocast == 'bf16' else 'fp32'}_img_per_s"
        out[key] = end_to_end_rate(source, backbone, tmp / "extract.h5", device=str(device), batch_size=bs,
                                   autocast=autocast)
        print(f"   {key} {out[key]:.0f}", flush=True)
    if device.type != "cpu":
        out["end_to_end_bf16_over_forward_bf16"] = out["end_to_end_bf16_img_per_s"] / out["forward_bf16_img_per_s"]
        out["goal_end_to_end_bf16_img_per_s"] = GOALS["resnet50_autocast_img_per_s"]
        out["goal_met"] = out["end_to_end_bf16_img_per_s"] >= GOALS["resnet50_autocast_img_per_s"]
    return out


# -- 2. heads ------------------------------------------------------------------------------------

def celeba_scale_table(sizes: dict):
    from solvers.synthetic import make_fair_classification

    X, y, a = make_fair_classification(sizes["n_rows"], sizes["n_features"], embedding_like=True,
                                       dtype=np.float32, seed=0)
    return X, y, a


def timed_fit(X, y, a, constraint: str, device: str):
    from solvers import FairLogisticRegression

    head = FairLogisticRegression(constraint=constraint, eps=HEAD_EPS[constraint], backend="torch", device=device)
    synchronize(torch.device(device))
    start = time.perf_counter()
    head.fit(X, y, sensitive_features=a)
    synchronize(torch.device(device))
    return head, time.perf_counter() - start


def head_summary(head, X, y, a, seconds: float) -> dict:
    from solvers import metrics

    pred = head.predict(X)
    cert = head.certificate_
    summary = {"seconds": round(seconds, 3), "accuracy": float(np.mean(pred == y)),
               "dp_gap": float(metrics.demographic_parity_difference(y, pred, sensitive_features=a)),
               "eo_gap": float(metrics.equalized_odds_difference(y, pred, sensitive_features=a)),
               "n_iter": int(cert.n_iter), "passes": cert.passes}
    for name in ("status", "eps_met", "achieved_gap", "max_violation", "objective", "zero_one_error"):
        value = getattr(cert, name, None)
        if isinstance(value, (bool, int, float, str, np.floating, np.bool_)):
            summary[name] = value.item() if hasattr(value, "item") else value
    return summary


def heads(sizes: dict, device: torch.device, table, fitted: dict) -> dict:
    """Each constraint's head on ``device``, timed cold (the CUDA context is up before the clock)."""
    X, y, a = table
    out: dict = {"n_rows": int(X.shape[0]), "n_features": int(X.shape[1]), "dtype": str(X.dtype),
                 "goal_seconds": GOALS["celeba_head_s"]}
    # CUDA context, cuBLAS handles and the backend's imports: paid once, not by the first head
    timed_fit(X[:2000], y[:2000], a[:2000], "dp-score", str(device))
    for constraint in HEAD_EPS:
        head, seconds = timed_fit(X, y, a, constraint, str(device))
        fitted[constraint] = (head, seconds)
        out[constraint] = {device.type: head_summary(head, X, y, a, seconds)}
        if device.type != "cpu":
            out[constraint]["goal_met"] = seconds <= GOALS["celeba_head_s"]
        print(f"   {constraint} on {device}: {seconds:.2f} s", flush=True)
    return out


def cpu_heads(sizes: dict, table, fitted: dict) -> dict:
    """The same heads on the CPU: the speed-up, and how far the accelerator's heads are from them.

    Run last: on a CelebA-scale table the CPU fits take minutes, and a cut-short run should
    still have reported the accelerator's figures.
    """
    X, y, a = table
    out: dict = {}
    for constraint in sizes["cpu_heads"]:
        head, seconds = timed_fit(X, y, a, constraint, "cpu")
        other, other_seconds = fitted[constraint]
        row = {"cpu": head_summary(head, X, y, a, seconds), "speedup_over_cpu": seconds / other_seconds,
               "max_abs_coef_diff": float(np.max(np.abs(head.coef_ - other.coef_))),
               "abs_intercept_diff": float(np.max(np.abs(head.intercept_ - other.intercept_))),
               "prediction_agreement": float(np.mean(head.predict(X) == other.predict(X)))}
        out[constraint] = row
        print(f"   {constraint} on cpu: {seconds:.2f} s (accelerator x{row['speedup_over_cpu']:.1f}, "
              f"predictions agree on {100 * row['prediction_agreement']:.2f}%)", flush=True)
    return out


# -- 3. sweep ------------------------------------------------------------------------------------

def sweep(sizes: dict, device: torch.device, table, tmp: Path, profile_dir: Path | None, cli: bool = True) -> dict:
    from solvers import fit_path

    X, y, a = table
    points = sizes["sweep_points"]
    grid = list(np.linspace(0.2, 0.01, points))
    synchronize(device)
    start = time.perf_counter()
    path = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="eo", backend="torch", device=str(device))
    synchronize(device)
    fit_path_s = time.perf_counter() - start
    met = [bool(getattr(h.certificate_, "eps_met", False)) for h in path]
    out: dict = {"points": points, "fit_path_seconds": round(fit_path_s, 2), "eps_met": met,
                 "goal_seconds": GOALS["sweep_20_s"]}
    print(f"   fit_path eo x{points} on {device}: {fit_path_s:.1f} s", flush=True)

    if not cli:
        return out
    # the whole command a user runs: import (once, not timed as the sweep) then `fairhead sweep`
    table_file = tmp / "table.npz"
    splits = np.where(np.arange(len(y)) % 10 < 8, "train", np.where(np.arange(len(y)) % 10 < 9, "valid", "test"))
    np.savez(table_file, features=X, label=y, group=a.astype(np.int64), split=splits)
    cache = tmp / "celeba_scale.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fairhead", "import", str(table_file), "--label", "label",
                    "--sensitive", "group", "--split", "split", "--out", str(cache), "--no-progress"],
                   check=True, env=env, capture_output=True, text=True)
    out["cli_import_seconds"] = round(time.perf_counter() - start, 2)
    profile = ["-m", "cProfile", "-o", str(profile_dir / "cli_sweep.prof")] if profile_dir else []
    command = [sys.executable, *profile, "-m", "fairhead", "sweep", str(cache), "--constraint", "eo", "--n-eps", str(points),
               "--solver-device", str(device), "--backend", "torch", "--out", str(tmp / "sweep")]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    out["cli_sweep_seconds"] = round(time.perf_counter() - start, 2)
    out["cli_sweep_returncode"] = done.returncode
    if done.returncode != 0:
        out["cli_sweep_stderr_tail"] = done.stderr[-2000:]
    print(f"   fairhead sweep (CLI, {points} eo points, plots) on {device}: {out['cli_sweep_seconds']:.1f} s "
          f"(rc {done.returncode})", flush=True)
    if device.type != "cpu":
        out["goal_met"] = fit_path_s <= GOALS["sweep_20_s"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU smoke run: the suite runs this)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cuda:N or cpu")
    parser.add_argument("--sections", nargs="+", default=["extraction", "heads", "sweep"],
                        choices=["extraction", "heads", "sweep"])
    parser.add_argument("--skip-cli-sweep", action="store_true",
                        help="time fit_path only, not the whole `fairhead sweep` command (import + plots)")
    parser.add_argument("--profile-dir", type=Path, default=None,
                        help="run the CLI sweep under cProfile and write cli_sweep.prof there")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    sizes = TINY if args.tiny else FULL
    report = Report(args.json)
    report.data.update(tiny=args.tiny, sizes={k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()})
    report.section("environment", lambda: environment(device))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp = Path(tmp)
        if "extraction" in args.sections:
            report.section("extraction", lambda: extraction(sizes, device, tmp))
        table = None
        if {"heads", "sweep"} & set(args.sections):
            start = time.perf_counter()
            table = celeba_scale_table(sizes)
            report.data["table_generated_s"] = round(time.perf_counter() - start, 1)
        fitted: dict = {}
        if "heads" in args.sections:
            report.section("heads", lambda: heads(sizes, device, table, fitted))
        if "sweep" in args.sections:
            report.section("sweep", lambda: sweep(sizes, device, table, tmp, args.profile_dir,
                                                     cli=not args.skip_cli_sweep))
        if "heads" in args.sections and len(fitted) == len(HEAD_EPS):  # on a CPU run: a determinism check
            report.section("cpu_heads", lambda: cpu_heads(sizes, table, fitted))
    print(f"wrote {args.json}", flush=True)
    return 1 if report.data["sections_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
