"""The progress bars of fairhead's commands: one policy for all, and a clock that keeps moving.

Policy: a bar is drawn only when the user asked for it (no ``--no-progress``) and stderr is a
terminal. A log or a pipe gets the result and one-line errors, never bar frames.
"""

from __future__ import annotations

import contextlib
import threading


def progress_bar(progress: bool, **tqdm_kwargs):
    """A ``tqdm`` bar on stderr under the policy above (``disable=None``: tqdm draws only on a terminal)."""
    from tqdm.auto import tqdm  # deferred: 40 ms that `fairhead --help` would pay

    return tqdm(disable=None if progress else True, dynamic_ncols=True, **tqdm_kwargs)


@contextlib.contextmanager
def ticking(bar, every_s: float = 1.0):
    """Redraw ``bar`` every ``every_s`` seconds from a daemon thread (its elapsed time keeps moving)."""
    if getattr(bar, "disable", True):
        yield
        return
    stop = threading.Event()

    def tick():
        while not stop.wait(every_s):
            bar.refresh()

    thread = threading.Thread(target=tick, name="fairhead-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
