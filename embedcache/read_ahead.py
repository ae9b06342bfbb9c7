"""Prepare the next batches on a background thread while the caller works on this one.

Extraction without DataLoader workers used to decode and preprocess a batch,
then run the network on it, then decode the next: the two never overlapped.
:class:`ReadAhead` iterates the batches on one background thread, at most
``depth`` batches ahead of the consumer. Decoding (PIL) and tensor operations
(torch) release the GIL, so on a machine with a spare core the preparation of
batch k+1 costs no wall time while the network runs on batch k.

The order of the items is the order of the iterable, so the batches, and the
bytes the extractor writes from them, are those of a plain loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["ReadAhead"]

#: seconds a blocked producer waits between looks at the stop flag
_POLL_S = 0.05
_ITEM, _END, _ERROR = "item", "end", "error"


class ReadAhead:
    """Iterate ``items`` on a background thread, at most ``depth`` items ahead.

    Parameters
    ----------
    items : iterable
        Produced on the background thread; a generator is also closed there,
        so its ``finally`` blocks run on the thread that ran its body.
    depth : int, default 2
        Items kept ready. 2 lets the producer start batch k+2 as soon as the
        consumer takes batch k+1, so a slow item does not stall the consumer.
    name : str
        The thread's name (shown by debuggers and ``py-spy``).

    Notes
    -----
    An exception raised by the producer is raised again by the consumer's
    iteration, at the place of the item it replaced. Use it as a context
    manager: entering the ``with`` block starts the producer; leaving it
    (normally, by an error, or by Ctrl-C) stops the producer and waits for it,
    so no thread outlives the block.

    Examples
    --------
    >>> with ReadAhead(x * x for x in range(5)) as squares:
    ...     list(squares)
    [0, 1, 4, 9, 16]
    """

    def __init__(self, items: Iterable[Any], *, depth: int = 2, name: str = "embedcache-read-ahead") -> None:
        if depth < 1:
            raise ValueError(f"ReadAhead depth must be at least 1, not {depth!r}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # daemon: a process exiting on an unhandled error never waits for a producer
        self._thread = threading.Thread(target=self._produce, args=(items,), name=name, daemon=True)

    def _produce(self, items: Iterable[Any]) -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as err:  # handed to the consumer, which raises it
            self._put((_ERROR, err))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _put(self, message: tuple[str, Any]) -> bool:
        """Queue ``message`` unless the consumer has stopped; True when queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        if not self._thread.is_alive() and self._thread.ident is None:
            raise RuntimeError("iterate a ReadAhead inside its with block (that starts and stops its thread)")
        while True:
            kind, value = self._queue.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value

    def close(self) -> None:
        """Stop the producer (after the item it is preparing) and wait for it."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()

    def __enter__(self) -> "ReadAhead":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
