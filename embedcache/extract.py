"""The batched inference loop: source images -> frozen backbone -> journal -> HDF5 cache.

One pass under ``torch.inference_mode``. DataLoader workers, or without
workers a background thread (:mod:`embedcache.read_ahead`), decode and
preprocess the next batches while the network runs on this one; only the
calling thread runs the network and writes. Each
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
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from embedcache.backbones import Backbone, draft_size_of
from embedcache.errors import BackboneError, CacheError, DataError
from embedcache.read_ahead import ReadAhead
from embedcache.store import inputs, schema
from embedcache.store.journal import JOURNAL_VERSION, Journal, WriteLock, remove_leftover_trash
from embedcache.store.reader import Cache, existing_cache_matches
from embedcache.store.shards import check_no_unfinished_shards
from embedcache.store.writer import (
    CacheTable,
    check_feature_dtype,
    check_free_space,
    check_member_name,
    commit_file,
    estimate_cache_bytes,
    identity_attrs,
    prepare_output,
    write_cache,
    write_error,
)

logger = logging.getLogger("embedcache")

#: test hook: seconds to sleep after each committed batch (lets a test kill mid-run)
BATCH_DELAY_ENV = "EMBEDCACHE_TEST_BATCH_DELAY"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
AUTOCAST_OFF = (False, "off", "none", "fp32", "float32")

#: how much lower the read-ahead thread's priority is than the network's (nice increment)
PREPARE_NICE = 10
#: images per forward pass of a new extraction (a resume keeps the size it last used)
DEFAULT_BATCH_SIZE = 64
#: what a failed write asks for once its cause is fixed (the committed rows are kept)
RESUME = "rerun to resume"
MSG_BAD_BATCH_SIZE = "`batch_size={value!r}` must be a positive integer; pass e.g. `batch_size=64`"
MSG_OUT_OF_MEMORY = (
    "out of memory at batch size {size} on {device} ({rows} of {total} rows are committed and kept); "
    "rerun with `batch_size={half}` to resume"
)
MSG_OUT_OF_MEMORY_AT_ONE = (
    "out of memory at batch size 1 on {device} ({rows} of {total} rows are committed and kept); "
    "free memory (other programs, or a smaller backbone or `image_size`), then rerun to resume"
)
MSG_OLD_JOURNAL = (
    "journal '{path}' was written by an older fairhead that did not record which image files it read; "
    "pass `overwrite=True` to start over"
)
MSG_BAD_WORKERS = "`num_workers={value!r}` must be a non-negative integer or None (auto)"
MSG_BAD_DEVICE = "device {value!r} is not available here ({reason}); pass `device='cpu'` or a device this machine has"
MSG_BAD_AUTOCAST = "autocast={value!r} is not supported; use None (auto), 'off', 'bf16' or 'fp16'"
MSG_MISSING_IMAGES = "{missing} of {total} image files of {where} are missing (first: '{first}'); restore them or drop their rows"
MSG_DAMAGED_JOURNAL = (
    "journal '{path}' is damaged ({problem}); remove the folder to start over, or pass `overwrite=True`"
)
MSG_BAD_FEATURES = "backbone {name} returned {problem}; {fix}"
MSG_UNEVEN_BATCH = (
    "the transform gave images of different shapes ({a} and {b}); make it resize and crop to one fixed size"
)

__all__ = ["extract"]


def extract(
    source,
    backbone: Backbone,
    out_path,
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str = "auto",
    feature_dtype: str = "float32",
    autocast: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    merge: bool = True,
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
    batch_size : int, optional
        Images per forward pass. None: 64 for a new extraction, and for a
        resume the size the interrupted run last used (so batch boundaries,
        and on CPU the bits, do not change). A resume may be given another
        size (after running out of memory, say): rows are rows.
    num_workers : int, optional
        DataLoader worker processes that decode images; 0: one background
        thread of this process decodes the next batches while the network runs
        on this one. None picks from the CPU count and the device (0 on CPU
        machines with up to 4 cores; every core but two next to a GPU).
    device : str, default "auto"
        "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    feature_dtype : {"float32", "float16"}
        Storage type of the features.
    autocast : None, "off", "bf16" or "fp16"
        Mixed precision for the forward pass. None uses bf16 (fp16 where bf16
        is unsupported) on CUDA and full precision on CPU.
    overwrite : bool, default False
        Replace an existing cache, or discard an unfinished extraction, made
        with another backbone, dataset or dtype, or one whose journal is
        damaged or whose images changed. (A healthy unfinished extraction of
        this same run is always resumed, never thrown away.) A file that is not
        HDF5 is never replaced.
    progress : bool, default True
        Show a tqdm bar with images/s on stderr.
    merge : bool, default True
        Only under ``torchrun`` (see :mod:`embedcache.distributed`): True
        copies the ranks' shards into one cache; False writes ``out_path``
        as a view (an HDF5 virtual dataset) over the shards, which stay.
        A single process ignores it.

    Returns
    -------
    pathlib.Path
        ``out_path``, now a complete cache (under ``torchrun``: on rank 0;
        the other ranks return once their shards are written).

    Raises
    ------
    CacheError
        An existing cache or unfinished extraction from another
        backbone/weights/dataset/dtype (without ``overwrite``), a damaged
        journal, image files changed since they were committed, another
        process writing the same cache, or a full disk.
    DataError
        Missing or undecodable images.
    BackboneError
        Features of the wrong shape, non-finite features, or out of memory.

    Notes
    -----
    Crash safety: batches go to ``<out>.partial/`` (data fsynced, then a row
    counter replaced atomically); at the end the HDF5 file is built as
    ``<out>.tmp``, marked complete, fsynced and renamed to ``<out>``, and the
    journal is removed (renamed aside first, so a kill leaves either a journal
    or none). Rerun the same call after any interruption to continue.

    Launched by ``torchrun`` with more than one process (``WORLD_SIZE`` > 1),
    each rank extracts its own contiguous block of rows into a shard cache
    and rank 0 merges them: see :func:`embedcache.distributed.extract_distributed`.

    On CPU, the features of an image did not depend on the batch it ran in for
    batches of 2 or more images (resnet18 and EfficientNet-Lite0, torch 2.x),
    so a resume with another batch size gave the same file; a batch of a single
    image, or a GPU, may differ in the last bits (3e-6 measured).

    Examples
    --------
    Twelve generated images through a tiny network (any module that gives (N, D) features):

    >>> import tempfile, pathlib
    >>> import numpy as np, torch
    >>> import embedcache
    >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> def to_tensor(img):
    ...     return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    >>> backbone = embedcache.Backbone.from_module(net, to_tensor, name="pool2x2")
    >>> source = embedcache.SyntheticSource(12, seed=0, image_size=16)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = embedcache.extract(source, backbone, pathlib.Path(tmp.name) / "shapes.h5",
    ...                           device="cpu", num_workers=0, progress=False)
    >>> with embedcache.open(path) as cache:
    ...     print(path.name, cache.n_rows, cache.feature_dim, cache.splits)
    shapes.h5 12 12 ['train', 'valid', 'test']
    >>> tmp.cleanup()
    """
    options = dict(batch_size=batch_size, num_workers=num_workers, device=device, feature_dtype=feature_dtype,
                   autocast=autocast, overwrite=overwrite, progress=progress)
    from embedcache import distributed  # it imports this module: import it at call time

    launch = distributed.launch_from_env()
    if launch is not None:
        return distributed.extract_distributed(source, backbone, out_path, launch=launch, merge=merge, **options)
    return extract_local(source, backbone, out_path, **options)


def check_options(source, *, batch_size, num_workers, feature_dtype: str) -> str:
    """Refuse bad arguments before any work; return the normalised feature dtype."""
    feature_dtype = check_feature_dtype(feature_dtype)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise DataError(MSG_BAD_BATCH_SIZE.format(value=batch_size))
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0
    ):
        raise DataError(MSG_BAD_WORKERS.format(value=num_workers))
    for name in source.sensitive:
        check_member_name(name)  # before any compute: HDF5 could never store it
    return feature_dtype


def run_identity(source, backbone: Backbone, *, feature_dtype: str, device: torch.device,
                 amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """The identity attributes of the cache this run writes (see ``schema.IDENTITY_ATTRS``)."""
    compute = device.type + (f"+autocast-{str(amp_dtype).replace('torch.', '')}" if amp_dtype else "")
    return identity_attrs(
        backbone=backbone.spec.as_dict(),
        dataset_fingerprint=source.fingerprint(),
        feature_dtype=feature_dtype,
        feature_dim=backbone.feature_dim,
        n_rows=len(source),
        compute=compute,
    )


def extract_local(
    source,
    backbone: Backbone,
    out_path,
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str = "auto",
    feature_dtype: str = "float32",
    autocast: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """:func:`extract` in this process alone; each rank of a distributed run calls it for its shard."""
    out = Path(out_path)
    feature_dtype = check_options(source, batch_size=batch_size, num_workers=num_workers, feature_dtype=feature_dtype)
    torch_device = resolve_device(device)
    amp_dtype = resolve_autocast(autocast, torch_device)
    n = len(source)
    identity = run_identity(source, backbone, feature_dtype=feature_dtype, device=torch_device, amp_dtype=amp_dtype)
    prepare_output(out)
    with WriteLock(out):
        remove_leftover_trash(out)  # a kill while the last run removed its journal
        check_no_unfinished_shards(out, identity, world_size=1)  # a distributed run's shards are its own
        journal = Journal(out)
        meta = _journal_meta(journal, overwrite=overwrite)
        resumable = meta is not None and schema.identity_mismatch(meta.get("identity", {}), identity, path=out) is None
        if meta is not None and not resumable and not overwrite:
            raise CacheError(
                schema.identity_mismatch(meta.get("identity", {}), identity, path=journal.dir, what="unfinished extraction")
            )
        if resumable and not overwrite and _finished_into(out, journal, identity):
            # killed after the new cache was in place, before its journal was gone: finish the clean-up
            journal.remove()
            _remove_stale_tmp(out)
            logger.info("cache '%s' was complete; removed the journal its run left behind", out)
            return out
        if not resumable and out.exists() and not overwrite:
            if existing_cache_matches(out, identity):
                _remove_stale_tmp(out)
                logger.info("cache '%s' is already complete for this backbone and dataset; nothing to do", out)
                return out
        _check_image_files(source)
        paths = _image_paths(source)
        committed, inputs_bytes, last_batch_size = 0, 0, None
        if resumable:
            try:
                committed, inputs_bytes, last_batch_size = _resume_point(journal, meta, identity, paths)
            except CacheError as err:
                if not overwrite:
                    raise
                logger.info("discarding the unfinished extraction in '%s': %s", journal.dir, err)
                resumable = False
        batch_size = int(batch_size or last_batch_size or DEFAULT_BATCH_SIZE)
        if last_batch_size is not None and batch_size != last_batch_size:
            logger.info("resuming with batch size %d instead of %d", batch_size, last_batch_size)
        row_bytes = backbone.feature_dim * np.dtype(feature_dtype).itemsize
        table = CacheTable.from_source(source)
        cache_bytes = estimate_cache_bytes(table, feature_dim=backbone.feature_dim, feature_dtype=feature_dtype)

        def needed(rows_done: int) -> int:
            """Bytes this run still writes: the rest of the journal, then the HDF5 file beside it."""
            return (n - rows_done) * row_bytes + cache_bytes

        try:
            check_free_space(journal.dir, needed(committed), then=RESUME)
            if not resumable:
                journal.start(
                    {
                        "format-version": schema.FORMAT_VERSION,
                        "journal-version": JOURNAL_VERSION,
                        "identity": identity,
                        "batch_size": batch_size,
                        "source": source.describe(),
                    }
                )
            journal.open_for_append(row_bytes=row_bytes, committed=committed, inputs_bytes=inputs_bytes)
        except OSError as err:
            journal.close()
            raise write_error(err, journal.dir, needed=needed(committed), then=RESUME) from err
        try:
            _run_batches(
                source,
                backbone,
                journal,
                paths=paths,
                start=committed,
                batch_size=batch_size,
                num_workers=_auto_workers(num_workers, n - committed, batch_size, torch_device),
                device=torch_device,
                amp_dtype=amp_dtype,
                feature_dtype=feature_dtype,
                progress=progress,
                needed=needed,
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
        _finish(out, journal, table, source, identity)
    return out


def _journal_meta(journal: Journal, *, overwrite: bool) -> dict[str, Any] | None:
    """The meta of an existing journal; None (and no journal left) when there is nothing to resume."""
    if not journal.exists():
        return None
    try:
        meta = journal.read_meta()
    except CacheError:
        if not overwrite:
            raise
        meta = None  # unreadable: --overwrite starts over
    if meta is None:
        journal.remove()  # killed while creating it (nothing was committed), or discarded
    return meta


def _finished_into(out: Path, journal: Journal, identity: dict[str, Any]) -> bool:
    """True if ``out`` is already the complete cache this journal was building."""
    if not out.exists():
        return False
    try:
        if journal.committed_rows() != int(identity[schema.N_ROWS_ATTR]):
            return False
        with Cache(out, ignore_journal=True) as cache:
            return schema.identity_mismatch(cache.identity, identity, path=out) is None
    except CacheError:
        return False


def _remove_stale_tmp(out: Path) -> None:
    """Delete a temporary cache file a killed run left behind (we hold the lock: nobody else writes it)."""
    try:
        schema.tmp_path(out).unlink()
    except OSError:
        pass


def _image_paths(source) -> list[Any] | None:
    paths_of = getattr(source, "image_paths", None)
    paths = paths_of() if callable(paths_of) else None
    return list(paths) if paths else None


def _resume_point(
    journal: Journal, meta: dict[str, Any], identity: dict[str, Any], paths
) -> tuple[int, int, int | None]:
    """Check a matching journal; return (committed rows, bytes of their inputs lines, last batch size)."""
    committed = journal.committed_rows()
    n = int(identity[schema.N_ROWS_ATTR])
    row_bytes = int(identity[schema.FEATURE_DIM_ATTR]) * np.dtype(identity[schema.FEATURE_DTYPE_ATTR]).itemsize
    if meta.get("journal-version") != JOURNAL_VERSION:
        raise CacheError(MSG_OLD_JOURNAL.format(path=journal.dir))
    if not 0 <= committed <= n:
        problem = f"{committed} committed rows for {n} rows"
        raise CacheError(MSG_DAMAGED_JOURNAL.format(path=journal.dir, problem=problem))
    on_disk = journal.valid_rows_on_disk(row_bytes)
    if on_disk < committed:
        problem = f"features.bin holds {on_disk} rows but {committed} are committed"
        raise CacheError(MSG_DAMAGED_JOURNAL.format(path=journal.dir, problem=problem))
    found = journal.input_records(committed)
    if found is None:
        problem = f"inputs.jsonl does not cover the {committed} committed rows"
        raise CacheError(MSG_DAMAGED_JOURNAL.format(path=journal.dir, problem=problem))
    records, inputs_bytes = found
    inputs.check_unchanged(records, paths, journal=journal.dir, committed=committed)
    last = journal.committed_batch_size()
    if last is None:
        value = meta.get("batch_size")
        last = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    logger.info("resuming '%s' at row %d of %d", journal.cache_path, committed, n)
    return committed, inputs_bytes, last


def _finish(out: Path, journal: Journal, table: CacheTable, source, identity: dict[str, Any]) -> None:
    """Build the HDF5 file from the journal, swap it into place, drop the journal."""
    features = journal.features(
        n_rows=int(identity[schema.N_ROWS_ATTR]),
        feature_dim=int(identity[schema.FEATURE_DIM_ATTR]),
        dtype=identity[schema.FEATURE_DTYPE_ATTR],
    )
    tmp = schema.tmp_path(out)
    write_cache(
        tmp,
        table=table,
        features=features,
        identity=identity,
        source_description=source.describe(),
        then=RESUME,
    )
    del features  # release the memmap before the journal goes
    try:
        commit_file(tmp, out)
    except OSError as err:
        _remove_stale_tmp(out)
        raise write_error(err, out, needed=0, then=RESUME) from err
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
        raise DataError(MSG_MISSING_IMAGES.format(missing=len(missing), total=len(paths), where=where, first=missing[0]))


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DataError(MSG_BAD_DEVICE.format(value=device, reason="unknown device name")) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DataError(MSG_BAD_DEVICE.format(value=device, reason="no CUDA device"))
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DataError(MSG_BAD_DEVICE.format(value=device, reason="no MPS device"))
    return resolved


def resolve_autocast(autocast: Any, device: torch.device) -> torch.dtype | None:
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
    raise DataError(MSG_BAD_AUTOCAST.format(value=autocast))


def _auto_workers(num_workers: int | None, rows: int, batch_size: int, device: torch.device) -> int:
    """Worker processes for decoding (0: a read-ahead thread of this process decodes).

    Small jobs decode in this process (starting workers costs more than it
    saves). On CPU the network's own threads already use every core, and
    decoding is a few percent of a forward pass (1.2 ms per 64-px JPEG against
    34 ms per image of EfficientNet-Lite0 at one thread), so machines with up to
    4 cores decode on one background thread (see :func:`_batches`): on 2 cores a
    worker process cost more CPU time than it saved (the batch's hand-off
    through shared memory, a second process's threads fighting for the cores).
    Larger CPU machines get a few workers. On a GPU the CPU has nothing else to
    do, so decode with every core but two: one for this process, which feeds the
    GPU and writes the journal, and one for the DataLoader's pin-memory thread,
    which copies each batch into page-locked memory. On an H200 with 16 cores, 8
    workers decoded 1,257 224-px JPEGs/s into ResNet-50 and 15 workers 1,376/s
    (whose bf16 forward runs at 15,000/s): the workers were not the limit.
    """
    if num_workers is not None:
        return int(num_workers)
    if rows <= 2 * batch_size:
        return 0
    cores = _usable_cores()
    if device.type == "cpu":
        return 0 if cores <= 4 else min(4, cores // 4)
    return max(1, min(32, cores - 2))


class _ImageRows(Dataset):
    """Rows ``start..n-1`` of a source as (row, preprocessed image, file record) triples.

    The file record is the image file's (size, mtime, sha256) when the source
    names its files (see :mod:`embedcache.store.inputs`), else None. A bad
    image does not raise in the worker (the DataLoader would wrap it in a
    multi-line report); its one-line message travels back instead and the
    main process raises it.
    """

    def __init__(self, source, transform, *, start: int, paths=None) -> None:
        self.source = source
        self.transform = transform
        self.start = start
        self.paths = paths
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
                return row, str(err), None
            record = None
            if self.paths is not None:
                # hashed after the decode succeeded; the page cache makes the second read cheap
                try:
                    record = inputs.read_file(self.paths[row])
                except OSError as err:
                    return row, f"image file '{self.paths[row]}' cannot be read ({err.strerror or err}); restore it", None
            return row, self.transform(image), record


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
    if threads == 1:  # a read-ahead thread, or a one-thread run: nothing to change
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _collate(items):
    for _, value, _ in items:
        if isinstance(value, str):
            return value  # an error message
    tensors = [value for _, value, _ in items]
    first = tuple(tensors[0].shape)
    for t in tensors[1:]:
        if tuple(t.shape) != first:
            return MSG_UNEVEN_BATCH.format(a=first, b=tuple(t.shape))
    records = [record for _, _, record in items]
    files = inputs.batch_record(records) if all(r is not None for r in records) else None
    return torch.tensor([row for row, _, _ in items], dtype=torch.int64), _stacked(tensors), files


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(tensors)``; in a DataLoader worker, straight into shared memory.

    A worker hands a batch to the main process through shared memory. Stacked
    into ordinary memory, the batch was copied once more into a shared segment
    on its way out (38 MB per batch of 64 224-px images); this is what torch's
    default collate does too.
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.stack(tensors)
    first = tensors[0]
    storage = first._typed_storage()._new_shared(len(tensors) * first.numel(), device=first.device)
    out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def _is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", MemoryError)
    if isinstance(err, (MemoryError, oom_type)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        key in text for key in ("out of memory", "can't allocate memory", "not enough memory", "defaultcpuallocator")
    )


def _run_batches(
    source,
    backbone: Backbone,
    journal: Journal,
    *,
    paths,
    start: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    feature_dtype: str,
    progress: bool,
    needed,
) -> None:
    from tqdm.auto import tqdm

    n = len(source)
    if start >= n:
        return
    cuda = device.type == "cuda"
    intra_op_threads = torch.get_num_threads()  # also pins this thread's count before a producer thread starts
    batches = _batches(source, backbone, paths=paths, start=start, batch_size=batch_size, num_workers=num_workers,
                       pin_memory=cuda)  # its producer starts at the `with` below
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

    def commit(item) -> None:
        try:
            _commit(journal, item, backbone, bar, delay, batch_size)
        except OSError as err:  # a full disk, say: the batches before stay committed
            raise write_error(err, journal.features_path, needed=needed(journal.rows), then=RESUME) from err

    # On CUDA one batch stays in flight: the forward of batch k overlaps the
    # device-to-host copy and the journal write of batch k-1. On CPU each batch
    # is committed as soon as it is computed.
    pending: tuple[torch.Tensor, Any, int, Any] | None = None
    try:
        with torch.inference_mode(), batches as loader:
            for batch in loader:
                if isinstance(batch, str):
                    if pending is not None:  # keep the work already done before failing
                        commit(pending)
                        pending = None
                    raise DataError(batch)
                rows, images, files = batch
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
                    current = (host, event, len(rows), files)
                else:
                    commit((features, None, len(rows), files))
                    continue
                if pending is not None:
                    commit(pending)
                pending = current
            if pending is not None:
                commit(pending)
                pending = None
    except Exception as err:
        if not _is_out_of_memory(err):
            raise
        if pending is not None:  # computed before memory ran out: keep it
            commit(pending)
        template = MSG_OUT_OF_MEMORY if batch_size > 1 else MSG_OUT_OF_MEMORY_AT_ONE
        raise BackboneError(
            template.format(size=batch_size, half=max(1, batch_size // 2), device=device, rows=journal.rows, total=n)
        ) from err
    finally:
        bar.close()
        # a read-ahead thread ran its transforms on one thread, which torch also records process-wide
        torch.set_num_threads(intra_op_threads)


def _batches(source, backbone: Backbone, *, paths, start: int, batch_size: int, num_workers: int, pin_memory: bool,
             read_ahead: bool = True):
    """A context manager giving the batches of rows ``start..``, prepared ahead of the network.

    With DataLoader workers, the workers prepare up to 4 batches each. Without
    workers, a background thread (:class:`ReadAhead`) prepares the next two
    batches while the network runs on this one; it did not overlap before, which
    cost the decode and preprocessing time of every batch on top of its forward.
    A single batch is prepared in-line (there is nothing to overlap it with), and
    so is every batch with ``read_ahead=False`` (the benchmark's "before" side).
    Either way the batches come in row order, so the bytes written do not change.
    """
    loader = DataLoader(
        _ImageRows(source, backbone.transform, start=start, paths=paths),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    if num_workers > 0 or len(source) - start <= batch_size or not read_ahead:
        return contextlib.nullcontext(loader)
    producer = _prepared_on_one_thread(loader, network_threads=torch.get_num_threads())
    return ReadAhead(producer, depth=2, name="embedcache-prepare")


def _prepared_on_one_thread(loader, *, network_threads: int):
    """Iterate ``loader`` on this (producer) thread with one intra-op thread.

    The transform's tensor operations are tiny; with the network's thread count
    they spun up a second OpenMP team beside the network's and fought it for
    the cores. The caller restores its count afterwards (torch keeps a
    process-wide default that threads started later read).

    Where the network's threads take every core, this thread's priority is
    lowered (Linux: nice +10), so that the preparation fills the cycles the
    network leaves idle instead of taking cores from it (when the network waits
    for a batch, its cores are free). With a spare core it keeps the network's
    priority: on a loaded machine a lowered thread lost that core to other
    programs and the network waited for it (``benchmarks/bench_extract.py``,
    see docs/benchmarks.md).
    """
    torch.set_num_threads(1)
    if network_threads >= _usable_cores():
        _lower_this_thread_priority(PREPARE_NICE)
    yield from loader


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _lower_this_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux only; elsewhere it would hit the process)."""
    if not sys.platform.startswith("linux"):
        return
    import threading

    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError:  # a sandbox may forbid it: the preparation then runs at the network's priority
        pass


def _checked_features(features: torch.Tensor, backbone: Backbone, rows: int) -> torch.Tensor:
    if features.ndim != 2 or tuple(features.shape) != (rows, backbone.feature_dim):
        raise BackboneError(
            MSG_BAD_FEATURES.format(
                name=backbone.name,
                problem=f"shape {tuple(features.shape)} for {rows} images, not ({rows}, {backbone.feature_dim})",
                fix="make the module return (N, D) features",
            )
        )
    return features


def _commit(journal: Journal, pending, backbone: Backbone, bar, delay: float, batch_size: int) -> None:
    features, event, rows, files = pending
    if event is not None:
        event.synchronize()
    block = features.cpu().numpy()
    if not np.isfinite(block).all():
        bad = int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0]) + journal.rows
        fix = "use feature_dtype float32" if block.dtype == np.float16 else "check the weights and the inputs"
        raise BackboneError(MSG_BAD_FEATURES.format(name=backbone.name, problem=f"non-finite features at row {bad}", fix=fix))
    journal.append(block, inputs=files, batch_size=batch_size)
    bar.update(rows)
    if delay:
        time.sleep(delay)
