"""Progress bars whose clock keeps moving while one long step runs."""

from __future__ import annotations

import contextlib
import threading


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
