"""Safe file writes that every fairhead package shares: atomic replacement, early write checks, and
one-line wording of operating-system errors.

A file is written to a temporary file in the same folder, flushed and fsynced, then moved over
its target with :func:`os.replace`, which is atomic on POSIX and Windows. A kill, a full disk or
a file-size limit therefore leaves the old file or the new one, never a mix or a truncated file;
a failed write removes its temporary file. (A ``kill -9`` can leave a hidden
``.NAME.*.tmp`` beside the target; it is never read.)

Like :mod:`fairhead_errors`, this module sits outside the packages so that ``solvers`` (heads) and
``fairhead`` (sweeps, protocols, reports) use one implementation without importing each other.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from fairhead_errors import DataError

#: characters of the target's name kept in the temporary file's name, so that a long but valid
#: target name never makes the temporary name too long for the file system
TMP_NAME_CHARS = 48
#: paths longer than this are shortened in messages (a path that is too long must still fit one line)
MESSAGE_PATH_CHARS = 120

MSG_NOT_A_FOLDER = "{flag} {path!r} is a file, not a folder; pass a folder path (it is created when missing)"
MSG_NOT_A_FILE = "{flag} {path!r} is a folder; pass a file name"
MSG_NO_PARENT = "folder {folder!r} for {flag} does not exist; create it first or pass a path in an existing folder"
MSG_CANNOT_WRITE = "cannot write into folder {folder!r} ({reason}); {fix}"


def temp_prefix(path) -> str:
    """``.NAME.PID.``: the temporary twin of ``path`` names its writer, so that a later run can tell the
    leftovers of a killed writer (whose process is gone) from a live writer's file."""
    path = Path(os.fspath(path))
    return f".{path.name[:TMP_NAME_CHARS]}.{os.getpid()}."


def _short(path) -> str:
    text = os.fspath(path) if path is not None else "?"
    if len(text) <= MESSAGE_PATH_CHARS:
        return text
    return f"{text[:60]}...{text[-40:]}"


def _new_file_mode(target: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual 0o666 minus the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def fsync_folder(folder) -> None:
    """Make a rename in ``folder`` durable (a no-op where the file system cannot sync folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def naming_the_file(path):
    """Add ``path`` to an OSError that has no file name (a failed ``write`` or ``fsync`` names none),
    so that the one-line message says which file hit the full disk."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise type(err)(err.errno, err.strerror or os.strerror(err.errno), os.fspath(path)) from err
        raise


class StagedFiles:
    """Write several files and replace them together.

    Each file is written to a temporary file beside its target and fsynced; only when every file
    is written are they renamed over their targets, back to back. A failure or a kill while
    writing leaves every old file as it was (and the temporary files are removed on a failure)::

        with StagedFiles() as staged:
            with staged.open(out / "table.csv", "w", newline="") as fh:
                ...
            staged.write_text(out / "report.md", text)
    """

    def __init__(self):
        self._staged: list[tuple[str, Path]] = []

    @contextlib.contextmanager
    def open(self, path, mode: str = "w", *, newline: str | None = None):
        """A file handle on the temporary twin of ``path`` (``mode`` ``"w"``: UTF-8 text, or ``"wb"``)."""
        if mode not in ("w", "wb"):
            raise ValueError(f"staged files are written whole; mode must be 'w' or 'wb', got {mode!r}")
        path = Path(os.fspath(path))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
        self._staged.append((tmp, path))
        with naming_the_file(path), \
                os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": newline} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

    def write_text(self, path, text: str) -> Path:
        with self.open(path, "w") as fh:
            fh.write(text)
        return Path(path)

    def write_bytes(self, path, data: bytes) -> Path:
        with self.open(path, "wb") as fh:
            fh.write(data)
        return Path(path)

    def discard(self) -> None:
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged.clear()

    def commit(self) -> None:
        try:
            for tmp, target in self._staged:
                os.chmod(tmp, _new_file_mode(target))
            for tmp, target in self._staged:
                os.replace(tmp, target)
        except BaseException:
            self.discard()
            raise
        for folder in {target.parent for _, target in self._staged}:
            fsync_folder(folder)
        self._staged.clear()

    def __enter__(self) -> "StagedFiles":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", *, newline: str | None = None):
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. On any error, or a Ctrl-C, the temporary file is
    removed and ``path`` is left as it was.
    """
    with StagedFiles() as staged, staged.open(path, mode, newline=newline) as fh:
        yield fh


def atomic_write_text(path, text: str) -> Path:
    """Replace ``path`` by ``text`` (UTF-8) atomically; return the path."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Replace ``path`` by ``data`` atomically; return the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def _probe(folder: Path, fix: str) -> None:
    """Create and remove a temporary file: the only reliable test that a write will succeed."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fairhead-write-check.", suffix=".tmp")
    except OSError as err:
        raise DataError(MSG_CANNOT_WRITE.format(folder=_short(folder), reason=_reason(err), fix=fix)) from err
    os.close(fd)
    os.unlink(tmp)


def ensure_output_folder(path, *, flag: str = "--out") -> Path:
    """Create the output folder ``path`` (with its parents) and check that files can be written in it.

    Called before any computation, so that a bad ``--out`` fails in a second, not after an hour.
    """
    path = Path(os.fspath(path))
    if path.exists() and not path.is_dir():
        raise DataError(MSG_NOT_A_FOLDER.format(flag=flag, path=_short(path)))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {flag} folder {_short(path)!r} ({_reason(err)}); "
                        f"{_fix(err)}") from err
    _probe(path, f"pass {flag} in a writable folder")
    return path


#: bytes read from the start of an existing output to recognise it as fairhead's own
SIGNATURE_BYTES = 4096
MSG_FOREIGN_OUTPUT = ("{flag} {folder!r} already holds {name!r}, which fairhead did not write; fairhead only "
                      "replaces its own outputs: pass a new or empty folder for {flag}, or move that file away")


def starts_with(*prefixes: bytes):
    """A signature test: the file starts with one of ``prefixes``."""
    return lambda head: head.startswith(prefixes)


def contains(*needles: bytes):
    """A signature test: the file's first bytes hold every one of ``needles``."""
    return lambda head: all(n in head for n in needles)


def PNG_BY_MATPLOTLIB(head: bytes) -> bool:  # noqa: N802 - used like the constants built above
    """A signature test: a PNG whose text chunk names matplotlib as its writer."""
    return head.startswith(b"\x89PNG") and b"Matplotlib" in head


def check_own_outputs(folder, signatures: dict, *, flag: str = "--out") -> None:
    """Refuse an output folder where a file that fairhead is about to replace was not written by
    fairhead (``--out .`` in a project with its own ``report.md``): a result must never replace a user's
    file. ``signatures`` maps each output name to a test of its first bytes."""
    folder = Path(os.fspath(folder))
    for name, looks_like_ours in signatures.items():
        path = folder / name
        if not os.path.lexists(path):
            continue
        try:
            with open(path, "rb") as fh:
                head = fh.read(SIGNATURE_BYTES)
        except OSError:
            head = None  # a folder, a broken link, an unreadable file: not ours either
        if head is None or not (head == b"" or looks_like_ours(head)):
            raise DataError(MSG_FOREIGN_OUTPUT.format(flag=flag, folder=_short(folder), name=name))
    for name in signatures:
        remove_stale_temps(folder / name)  # a killed earlier write's temporary twins


def check_file_target(path, *, flag: str = "--out", fix: str | None = None) -> Path:
    """Check that the file ``path`` can be (re)written: its folder exists and is writable and
    ``path`` is not a folder. Does not create anything but a removed probe file."""
    path = Path(os.fspath(path))
    folder = path.parent
    if path.is_dir():
        raise DataError(MSG_NOT_A_FILE.format(flag=flag, path=_short(path)))
    if not folder.is_dir():
        raise DataError(MSG_NO_PARENT.format(folder=_short(folder), flag=flag))
    if len(path.name.encode()) > _name_max(folder):
        raise DataError(f"file name too long for {flag}: {_short(path.name)!r} ({len(path.name.encode())} bytes, "
                        f"the limit is {_name_max(folder)}); pass a shorter name")
    _probe(folder, fix or f"pass {flag} in a writable folder")
    remove_stale_temps(path)  # a killed earlier write's temporary twin
    return path


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _reason(err: OSError) -> str:
    return (err.strerror or str(err)).lower() if isinstance(err, OSError) else str(err)


_FIXES = {
    errno.ENOENT: "create the folder first or pass an existing path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; pass another path",
    errno.EISDIR: "pass a file name, not a folder",
    errno.EEXIST: "pass another path",
    errno.EACCES: "pass a path you may write, or fix the permissions",
    errno.EPERM: "pass a path you may write, or fix the permissions",
    errno.EROFS: "pass a path on a writable disk",
    errno.ENOSPC: "free space on that disk (or write elsewhere) and rerun; finished work is kept",
    errno.EFBIG: "raise the file-size limit (ulimit -f) or write to another disk, and rerun",
    errno.ENAMETOOLONG: "pass a shorter file name",
}
if hasattr(errno, "EDQUOT"):
    _FIXES[errno.EDQUOT] = "free space within your disk quota (or write elsewhere) and rerun"


def _fix(err: OSError) -> str:
    return _FIXES.get(err.errno, "check the path and rerun")


def os_error_message(err: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, and the fix.

    ``[Errno 28] No space left on device: 'out/sweep.json'`` becomes
    ``no space left on device: 'out/sweep.json'; free space on that disk (or write elsewhere) and rerun; ...``.
    """
    reason = _reason(err)
    where = ""
    if err.filename is not None:
        where = f": {_short(err.filename)!r}"
        if err.filename2 is not None:
            where += f" -> {_short(err.filename2)!r}"
    return f"{reason}{where}; {_fix(err)}"


# --------------------------------------------------------------------------- the output policy
#: what an existing target is, by its first bytes (for the one-line refusal)
_FILE_KINDS = (
    (lambda h: h.startswith(b"\x89HDF\r\n\x1a\n") and b"embedcache" in h, "a fairhead cache (HDF5)"),
    (lambda h: h.startswith(b"\x89HDF\r\n\x1a\n"), "an HDF5 file"),
    (lambda h: h.lstrip().startswith(b"{") and b'"fairhead-head"' in h, "a fairhead head"),
    (lambda h: h.startswith(b"PK\x03\x04"), "a zip archive (a torch or joblib file?)"),
    (lambda h: h.startswith(b"\x89PNG"), "a PNG image"),
    (lambda h: h[:1] in (b"\xff",) and h[1:3] == b"\xd8\xff", "a JPEG image"),
    (lambda h: h.startswith(b"\x80") and b"sklearn" in h, "a pickled scikit-learn model"),
    (lambda h: h.startswith(b"\x80"), "a pickle"),
    (lambda h: h.lstrip().startswith((b"{", b"[")), "a JSON file"),
    (lambda h: b"," in h.split(b"\n", 1)[0] and b"\x00" not in h, "a CSV table"),
    (lambda h: b"\x00" not in h, "a text file"),
)
MSG_FOREIGN_TARGET = ("{flag} {path!r} is {what}, not {kind} that fairhead wrote; it is not replaced: "
                      "pass another path for {flag} (or move that file away)")
MSG_TARGET_IS_INPUT = ("{flag} {path!r} is this command's own input ({role}); writing there would destroy it: "
                       "pass another path for {flag}")


def describe_file(path) -> str:
    """What an existing path is, in a few words: ``a fairhead cache (HDF5)``, ``a CSV table``, ``a folder``."""
    path = Path(os.fspath(path))
    if path.is_dir():
        return "a folder"
    if os.path.islink(path) and not path.exists():
        return "a dangling symbolic link"
    if not path.is_file():
        return "not a regular file (a pipe, socket or device)"
    try:
        with open(path, "rb") as fh:
            head = fh.read(SIGNATURE_BYTES)
    except OSError as err:
        return f"a file fairhead cannot read ({_reason(err)})"
    if not head:
        return "an empty file"
    return next((what for test, what in _FILE_KINDS if test(head)), "a binary file")


class OutputKind:
    """One kind of file a command writes, and how to recognise a file of that kind it wrote before.

    ``name`` is said in messages (``"a predictions table"``); ``is_own(path)`` reads at most a few
    KiB of an existing regular file and says whether fairhead wrote it as this kind of output.
    """

    def __init__(self, name: str, is_own):
        self.name = name
        self._is_own = is_own

    def is_own(self, path) -> bool:
        try:
            return bool(self._is_own(Path(os.fspath(path))))
        except Exception:  # noqa: BLE001 - whatever fails to parse as this kind is not this kind
            return False

    def __repr__(self) -> str:
        return f"OutputKind({self.name!r})"


def first_bytes(path, n: int = SIGNATURE_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def by_signature(name: str, test) -> OutputKind:
    """An :class:`OutputKind` recognised by a test of its first bytes (see :func:`starts_with`)."""
    return OutputKind(name, lambda path: test(first_bytes(path)))


def remove_stale_temps(path) -> list[Path]:
    """Remove the temporary twins of ``path`` that a killed writer left (``.NAME.PID.*.tmp`` whose
    process is gone); a live writer's temporary file is kept. Returns what was removed."""
    path = Path(os.fspath(path))
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name[:TMP_NAME_CHARS])}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        pid_text = tmp.name[len(path.name[:TMP_NAME_CHARS]) + 2:].split(".", 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp)
            else:
                tmp.unlink()
            removed.append(tmp)
    return removed


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: alive
    return True


def _same_file(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, os.fspath(b))
    except (OSError, TypeError, ValueError):
        return False


def check_output_file(path, kind: OutputKind, *, flag: str = "--out", inputs: dict | None = None,
                      fix: str | None = None) -> Path:
    """The output policy's check, run before any work: ``path`` may be written by this command.

    Refused in one line: a folder, a missing or unwritable folder, a name that is too long, one of the
    command's own inputs (``inputs`` maps a role such as ``"--head"`` to its path), and an existing file
    that is not ``kind``'s own output (a cache, a head, a user's CSV: said what it is). An empty file, a
    file this command wrote before, or no file at all may be replaced. The temporary files a killed
    earlier run left beside ``path`` are removed. The write itself goes through :func:`atomic_open`
    (or :class:`StagedFiles`): a temporary file in the same folder, fsynced, renamed; removed on failure.
    """
    path = Path(os.fspath(path))
    for role, other in (inputs or {}).items():
        if other is not None and (_same_file(path, other) or Path(os.fspath(other)).absolute() == path.absolute()):
            raise DataError(MSG_TARGET_IS_INPUT.format(flag=flag, path=_short(path), role=role))
    if os.path.lexists(path) and not path.is_dir():
        what = describe_file(path)
        if what != "an empty file" and not (path.is_file() and kind.is_own(path)):
            raise DataError(MSG_FOREIGN_TARGET.format(flag=flag, path=_short(path), what=what, kind=kind.name))
    return check_file_target(path, flag=flag, fix=fix)


__all__ = [
    "OutputKind", "by_signature", "first_bytes", "check_output_file", "describe_file", "remove_stale_temps", "temp_prefix",
    "StagedFiles", "atomic_open", "atomic_write_text", "atomic_write_bytes", "ensure_output_folder", "check_file_target",
    "os_error_message", "fsync_folder", "naming_the_file", "check_own_outputs", "starts_with", "contains",
    "PNG_BY_MATPLOTLIB",
]
