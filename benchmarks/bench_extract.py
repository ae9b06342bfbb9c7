"""Extraction throughput end to end (JPEG files -> DataLoader -> backbone -> journal -> HDF5)
against the same backbone's pure forward throughput on in-memory preprocessed tensors.

One run measures both, alternating them ``--repeats`` times so that load from
other processes hits both alike, and prints the ratio (goal on CPU: the cache,
loader and decode overhead costs at most 10%, i.e. ratio >= 0.90).

Usage::

    python benchmarks/bench_extract.py [--n 384] [--batch-size 64] [--backbone efficientnet_lite0]
                                       [--num-workers N] [--json benchmarks/results/bench_extract.json]

The dataset is the generated default written as real JPEG files (seeded), so
the end-to-end path decodes files exactly as `fairhead demo` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import embedcache  # noqa: E402
from embedcache.extract import _auto_workers, resolve_device  # noqa: E402
from embedcache.sources import ManifestSource, write_synthetic_dataset  # noqa: E402
from embedcache.store.writer import library_versions  # noqa: E402


def forward_throughput(backbone, batches, device: torch.device) -> float:
    """Images/s of the bare forward pass over preprocessed batches already in memory."""
    backbone.model.to(device)
    cuda = device.type == "cuda"
    batches = [b.to(device).contiguous(memory_format=torch.channels_last) for b in batches]
    images = sum(len(b) for b in batches)
    with torch.inference_mode():
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):  # as extract() on CUDA
                features = backbone.forward_features(batch)
            features.float().cpu()  # the extractor also brings every batch back to the host
        if cuda:
            torch.cuda.synchronize()
        return images / (time.perf_counter() - start)


def extraction_throughput(source, backbone, out: Path, *, batch_size: int, num_workers, device) -> float:
    """Images/s of a full extraction into a fresh HDF5 cache (journal and final file included)."""
    for leftover in (out, out.with_name(out.name + ".partial")):
        if leftover.is_file():
            leftover.unlink()
    start = time.perf_counter()
    embedcache.extract(source, backbone, out, batch_size=batch_size, num_workers=num_workers, device=device,
                       progress=False, overwrite=True)
    return len(source) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=192, help="images (default 192)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=None, help="crop size override (torchvision backbones)")
    parser.add_argument("--source-size", type=int, default=64, help="side of the generated JPEG images")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: auto)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=4, help="alternating forward / end-to-end pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_extract.json")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    workers = _auto_workers(args.num_workers, args.n, args.batch_size, device)
    backbone = embedcache.build_backbone(args.backbone, image_size=args.image_size)
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        tmp = Path(tmp)
        manifest = write_synthetic_dataset(tmp / "data", n=args.n, seed=args.seed, image_size=args.source_size,
                                           image_format="jpeg")
        source = ManifestSource(manifest, label_col="shape", sensitive_cols="background", split_col="split",
                                id_col="id")
        # the forward side gets the same preprocessed images, batched the same way
        tensors = [backbone.transform(source.load_image(i)) for i in range(len(source))]
        batches = [torch.stack(tensors[i : i + args.batch_size]) for i in range(0, len(tensors), args.batch_size)]
        forward_throughput(backbone, batches[:1], device)  # warm-up (allocator, oneDNN kernels)
        forward, end_to_end = [], []
        for _ in range(args.repeats):
            forward.append(forward_throughput(backbone, batches, device))
            end_to_end.append(extraction_throughput(source, backbone, tmp / "bench.h5", batch_size=args.batch_size,
                                                    num_workers=workers, device=str(device)))
    best_forward, best_e2e = max(forward), max(end_to_end)
    ratio = best_e2e / best_forward
    # each pair ran back to back, so load from other processes mostly cancels in its ratio
    paired = statistics.median(e / f for e, f in zip(end_to_end, forward))
    result = {
        "benchmark": "bench_extract",
        "seed": args.seed,
        "n_images": args.n,
        "batch_size": args.batch_size,
        "source_image_px": args.source_size,
        "backbone": backbone.spec.as_dict(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "num_workers": workers,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": library_versions(),
        "forward_img_per_s": forward,
        "end_to_end_img_per_s": end_to_end,
        "best_forward_img_per_s": best_forward,
        "best_end_to_end_img_per_s": best_e2e,
        "ratio_end_to_end_over_forward": ratio,
        "median_paired_ratio": paired,
        "overhead_fraction": 1.0 - ratio,
        "goal": "overhead <= 0.10 on CPU",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"backbone        {backbone.name} ({backbone.spec.preprocessing})")
    print(f"device          {device}, torch threads {torch.get_num_threads()}, loader workers {workers}")
    print(f"images          {args.n} JPEG files of {args.source_size} px, batch {args.batch_size}")
    print(f"forward only    {best_forward:8.1f} img/s   (runs: {', '.join(f'{v:.1f}' for v in forward)})")
    print(f"end to end      {best_e2e:8.1f} img/s   (runs: {', '.join(f'{v:.1f}' for v in end_to_end)})")
    print(f"ratio           {ratio:8.3f}   overhead {100 * (1 - ratio):.1f}% (goal <= 10%; best end to end / best forward)")
    print(f"paired ratio    {paired:8.3f}   (median over back-to-back pairs)")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
