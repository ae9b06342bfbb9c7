"""The batched inference loop: source images -> frozen backbone -> journal -> HDF5 cache.

One pass under ``torch.inference_mode``. DataLoader workers decode and
preprocess images; only the main process runs the network and writes. Each
batch is committed to the journal (``x.h5.partial/``) before the next is
written, so an interrupted run (Ctrl-C, kill -9, power loss) resumes from the
last committed batch. Batch boundaries never move (a resume starts on one), so
on CPU the finished file is bitwise identical to an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from embedcache.backbones import Backbone, draft_size_of
from embedcache.errors import BackboneError, CacheError, DataError
from embedcache.store import schema
from embedcache.store.journal import Journal, WriteLock
from embedcache.store.reader import existing_cache_matches
from embedcache.store.writer import (
    CacheTable,
    check_feature_dtype,
    commit_file,
    identity_attrs,
    write_cache,
)

logger = logging.getLogger("embedcache")

#: test hook: seconds to sleep after each committed batch (lets a test kill mid-run)
BATCH_DELAY_ENV = "EMBEDCACHE_TEST_BATCH_DELAY"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
AUTOCAST_OFF = (False, "off", "none", "fp32", "float32")

BAD_BATCH_SIZE_MSG = "batch_size={value!r} must be a positive integer; pass e.g. --batch-size 64"
BAD_WORKERS_MSG = "num_workers={value!r} must be a non-negative integer or None (auto)"
BAD_DEVICE_MSG = "device {value!r} is not available here ({reason}); pass --device cpu or a device this machine has"
BAD_AUTOCAST_MSG = "autocast={value!r} is not supported; use None (auto), 'off', 'bf16' or 'fp16'"
MISSING_IMAGES_MSG = "{missing} of {total} image files of {where} are missing (first: '{first}'); restore them or drop their rows"
DAMAGED_JOURNAL_MSG = (
    "journal '{path}' is damaged ({problem}); remove the folder to start over, or pass --overwrite"
)
BAD_FEATURES_MSG = "backbone {name} returned {problem}; {fix}"
UNEVEN_BATCH_MSG = (
    "the transform gave images of different shapes ({a} and {b}); make it resize and crop to one fixed size"
)

__all__ = ["extract"]


def extract(
    source,
    backbone: Backbone,
    out_path,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str = "auto",
    feature_dtype: str = "float32",
    autocast: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run ``backbone`` once over ``source`` and write the features to an HDF5 cache.

    Parameters
    ----------
    source : Source
        Any object with the :class:`embedcache.sources.Source` attributes.
    backbone : Backbone
        From :func:`embedcache.build_backbone` or :meth:`Backbone.from_module`.
    out_path : path
        The cache file to create.
    batch_size : int, default 64
        Images per forward pass. A resumed run keeps the batch size it started
        with, so batch boundaries (and on CPU the bits) do not change.
    num_workers : int, optional
        DataLoader worker processes that decode images; None picks a number
        from the CPU count and the device.
    device : str, default "auto"
        "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    feature_dtype : {"float32", "float16"}
        Storage type of the features.
    autocast : None, "off", "bf16" or "fp16"
        Mixed precision for the forward pass. None uses bf16 (fp16 where bf16
        is unsupported) on CUDA and full precision on CPU.
    overwrite : bool, default False
        Replace an existing cache, or discard an unfinished extraction, made
        with another backbone, dataset or dtype. (An unfinished extraction of
        this same run is always resumed, never thrown away.)
    progress : bool, default True
        Show a tqdm bar with images/s on stderr.

    Returns
    -------
    pathlib.Path
        ``out_path``, now a complete cache.

    Raises
    ------
    CacheError
        An existing cache or unfinished extraction from another
        backbone/weights/dataset/dtype (without ``overwrite``), a damaged
        journal, or another process writing the same cache.
    DataError
        Missing or undecodable images.
    BackboneError
        Features of the wrong shape or non-finite features.

    Notes
    -----
    Crash safety: batches go to ``<out>.partial/`` (data fsynced, then a row
    counter replaced atomically); at the end the HDF5 file is built as
    ``<out>.tmp``, marked complete, fsynced and renamed to ``<out>``. Rerun the
    same call after any interruption to continue.
    """
    out = Path(out_path)
    feature_dtype = check_feature_dtype(feature_dtype)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(BAD_BATCH_SIZE_MSG.format(value=batch_size))
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0
    ):
        raise DataError(BAD_WORKERS_MSG.format(value=num_workers))
    torch_device = _resolve_device(device)
    amp_dtype = _resolve_autocast(autocast, torch_device)
    compute = torch_device.type + (f"+autocast-{str(amp_dtype).replace('torch.', '')}" if amp_dtype else "")
    n = len(source)
    identity = identity_attrs(
        backbone=backbone.spec.as_dict(),
        dataset_fingerprint=source.fingerprint(),
        feature_dtype=feature_dtype,
        feature_dim=backbone.feature_dim,
        n_rows=n,
        compute=compute,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with WriteLock(out):
        journal = Journal(out)
        meta = journal.read_meta() if journal.exists() else None
        if meta is None and journal.exists():
            journal.remove()  # killed while creating it: nothing was committed
        resumable = meta is not None and schema.identity_mismatch(meta.get("identity", {}), identity, path=out) is None
        if meta is not None and not resumable and not overwrite:
            raise CacheError(
                schema.identity_mismatch(meta.get("identity", {}), identity, path=journal.dir, what="unfinished extraction")
            )
        if not resumable and out.exists() and not overwrite:
            if existing_cache_matches(out, identity):
                logger.info("cache '%s' is already complete for this backbone and dataset; nothing to do", out)
                return out
        if resumable:
            batch_size, committed = _resume_point(journal, meta, identity, batch_size)
        else:
            committed = 0
        _check_image_files(source)
        if not resumable:
            journal.start(
                {
                    "format-version": schema.FORMAT_VERSION,
                    "identity": identity,
                    "batch_size": int(batch_size),
                    "source": source.describe(),
                }
            )
        row_bytes = backbone.feature_dim * np.dtype(feature_dtype).itemsize
        journal.open_for_append(row_bytes=row_bytes, committed=committed)
        try:
            _run_batches(
                source,
                backbone,
                journal,
                start=committed,
                batch_size=int(batch_size),
                num_workers=_auto_workers(num_workers, n - committed, batch_size, torch_device),
                device=torch_device,
                amp_dtype=amp_dtype,
                feature_dtype=feature_dtype,
                progress=progress,
            )
        except KeyboardInterrupt:
            logger.warning(
                "interrupted: %d of %d rows are committed in '%s'; rerun the same command to resume",
                journal.rows,
                n,
                journal.dir,
            )
            raise
        finally:
            journal.close()
        _finish(out, journal, source, identity)
    return out


def _resume_point(journal: Journal, meta: dict[str, Any], identity: dict[str, Any], batch_size: int) -> tuple[int, int]:
    """Check a matching journal and return (batch size it uses, committed rows)."""
    journal_batch = int(meta.get("batch_size", 0))
    committed = journal.committed_rows()
    n = int(identity[schema.N_ROWS_ATTR])
    row_bytes = int(identity[schema.FEATURE_DIM_ATTR]) * np.dtype(identity[schema.FEATURE_DTYPE_ATTR]).itemsize
    if journal_batch < 1:
        raise CacheError(DAMAGED_JOURNAL_MSG.format(path=journal.dir, problem="no batch size in meta.json"))
    if not 0 <= committed <= n or (committed % journal_batch and committed != n):
        problem = f"{committed} committed rows for {n} rows in batches of {journal_batch}"
        raise CacheError(DAMAGED_JOURNAL_MSG.format(path=journal.dir, problem=problem))
    on_disk = journal.valid_rows_on_disk(row_bytes)
    if on_disk < committed:
        problem = f"features.bin holds {on_disk} rows but {committed} are committed"
        raise CacheError(DAMAGED_JOURNAL_MSG.format(path=journal.dir, problem=problem))
    if journal_batch != batch_size:
        logger.info("resuming with batch size %d (the run started with it) instead of %d", journal_batch, batch_size)
    logger.info("resuming '%s' at row %d of %d", journal.cache_path, committed, n)
    return journal_batch, committed


def _finish(out: Path, journal: Journal, source, identity: dict[str, Any]) -> None:
    """Build the HDF5 file from the journal, swap it into place, drop the journal."""
    features = journal.features(
        n_rows=int(identity[schema.N_ROWS_ATTR]),
        feature_dim=int(identity[schema.FEATURE_DIM_ATTR]),
        dtype=identity[schema.FEATURE_DTYPE_ATTR],
    )
    tmp = schema.tmp_path(out)
    write_cache(
        tmp,
        table=CacheTable.from_source(source),
        features=features,
        identity=identity,
        source_description=source.describe(),
    )
    del features  # release the memmap before the journal goes
    commit_file(tmp, out)
    journal.remove()


def _check_image_files(source) -> None:
    """Fail before hours of compute if image files are missing."""
    paths_of = getattr(source, "image_paths", None)
    paths = paths_of() if callable(paths_of) else None
    if not paths:
        return
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        where = getattr(source, "_where", type(source).__name__)
        raise DataError(MISSING_IMAGES_MSG.format(missing=len(missing), total=len(paths), where=where, first=missing[0]))


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DataError(BAD_DEVICE_MSG.format(value=device, reason="unknown device name")) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DataError(BAD_DEVICE_MSG.format(value=device, reason="no CUDA device"))
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DataError(BAD_DEVICE_MSG.format(value=device, reason="no MPS device"))
    return resolved


def _resolve_autocast(autocast: Any, device: torch.device) -> torch.dtype | None:
    if autocast is None:
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if autocast in AUTOCAST_OFF:
        return None
    if isinstance(autocast, torch.dtype) and autocast in (torch.bfloat16, torch.float16):
        return autocast
    if isinstance(autocast, str) and autocast.lower() in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[autocast.lower()]
    raise DataError(BAD_AUTOCAST_MSG.format(value=autocast))


def _auto_workers(num_workers: int | None, rows: int, batch_size: int, device: torch.device) -> int:
    """Worker processes for decoding.

    Small jobs decode in the main process (starting workers costs more than it
    saves). On CPU the network's own threads already use every core, and
    decoding is a few percent of a forward pass, so small machines decode
    in-line: on 2 cores a worker process cost more CPU time (shared-memory
    hand-off, threads fighting for cores) than it saved. On a GPU the CPU has
    nothing else to do, so decode with most cores.
    """
    if num_workers is not None:
        return int(num_workers)
    if rows <= 2 * batch_size:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cpu":
        return 0 if cores <= 4 else min(4, cores // 4)
    return max(1, min(8, cores - 1))


class _ImageRows(Dataset):
    """Rows ``start..n-1`` of a source as (row, preprocessed image) pairs.

    A bad image does not raise in the worker (the DataLoader would wrap it in
    a multi-line report); its one-line message travels back instead and the
    main process raises it.
    """

    def __init__(self, source, transform, *, start: int) -> None:
        self.source = source
        self.transform = transform
        self.start = start
        draft = draft_size_of(transform)
        accepts_draft = "draft_size" in inspect.signature(source.load_image).parameters
        self.load_kwargs = {"draft_size": draft} if draft is not None and accepts_draft else {}

    def __len__(self) -> int:
        return len(self.source) - self.start

    def __getitem__(self, k: int):
        row = self.start + k
        with _one_thread_in_main_process():
            try:
                image = self.source.load_image(row, **self.load_kwargs)
            except DataError as err:
                return row, str(err)
            return row, self.transform(image)


@contextlib.contextmanager
def _one_thread_in_main_process():
    """Run one image's preprocessing on one intra-op thread.

    The transform's tensor ops are tiny; on a busy machine, fanning each out to
    the OpenMP pool the network uses made them wait on descheduled threads
    (2 ms of work took 30 ms). Workers already run with one thread.
    """
    if torch.utils.data.get_worker_info() is not None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _collate(items):
    for _, value in items:
        if isinstance(value, str):
            return value  # an error message
    tensors = [value for _, value in items]
    first = tuple(tensors[0].shape)
    for t in tensors[1:]:
        if tuple(t.shape) != first:
            return UNEVEN_BATCH_MSG.format(a=first, b=tuple(t.shape))
    return torch.tensor([row for row, _ in items], dtype=torch.int64), torch.stack(tensors)


def _run_batches(
    source,
    backbone: Backbone,
    journal: Journal,
    *,
    start: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    feature_dtype: str,
    progress: bool,
) -> None:
    from tqdm.auto import tqdm

    n = len(source)
    if start >= n:
        return
    cuda = device.type == "cuda"
    loader = DataLoader(
        _ImageRows(source, backbone.transform, start=start),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=cuda,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    backbone.model.to(device)  # keeps the channels_last layout the Backbone set
    out_dtype = getattr(torch, feature_dtype)
    delay = float(os.environ.get(BATCH_DELAY_ENV, "0") or 0)
    bar = tqdm(
        total=n,
        initial=start,
        unit="img",
        desc=f"extract {backbone.name}",
        disable=not progress,
        smoothing=0.1,
        dynamic_ncols=True,
    )
    # On CUDA one batch stays in flight: the forward of batch k overlaps the
    # device-to-host copy and the journal write of batch k-1. On CPU each batch
    # is committed as soon as it is computed.
    pending: tuple[torch.Tensor, Any, int] | None = None
    try:
        with torch.inference_mode():
            for batch in loader:
                if isinstance(batch, str):
                    if pending is not None:  # keep the work already done before failing
                        _commit(journal, pending, backbone, bar, delay)
                        pending = None
                    raise DataError(batch)
                rows, images = batch
                if int(rows[0]) != start:
                    raise CacheError(f"internal: expected row {start}, loader gave {int(rows[0])}")
                start += len(rows)
                images = images.to(device, non_blocking=cuda).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    features = backbone.forward_features(images)
                features = _checked_features(features, backbone, len(rows)).to(out_dtype)
                if cuda:
                    host = torch.empty(features.shape, dtype=out_dtype, pin_memory=True)
                    host.copy_(features, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                    current = (host, event, len(rows))
                else:
                    _commit(journal, (features, None, len(rows)), backbone, bar, delay)
                    continue
                if pending is not None:
                    _commit(journal, pending, backbone, bar, delay)
                pending = current
            if pending is not None:
                _commit(journal, pending, backbone, bar, delay)
                pending = None
    finally:
        bar.close()


def _checked_features(features: torch.Tensor, backbone: Backbone, rows: int) -> torch.Tensor:
    if features.ndim != 2 or tuple(features.shape) != (rows, backbone.feature_dim):
        raise BackboneError(
            BAD_FEATURES_MSG.format(
                name=backbone.name,
                problem=f"shape {tuple(features.shape)} for {rows} images, not ({rows}, {backbone.feature_dim})",
                fix="make the module return (N, D) features",
            )
        )
    return features


def _commit(journal: Journal, pending, backbone: Backbone, bar, delay: float) -> None:
    features, event, rows = pending
    if event is not None:
        event.synchronize()
    block = features.cpu().numpy()
    if not np.isfinite(block).all():
        bad = int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0]) + journal.rows
        fix = "use feature_dtype float32" if block.dtype == np.float16 else "check the weights and the inputs"
        raise BackboneError(BAD_FEATURES_MSG.format(name=backbone.name, problem=f"non-finite features at row {bad}", fix=fix))
    journal.append(block)
    bar.update(rows)
    if delay:
        time.sleep(delay)
