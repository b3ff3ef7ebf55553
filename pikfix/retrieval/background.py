"""Run a per-item function in a background thread, so decoding overlaps with the network.

Pillow's decoders and torch's resizing release the GIL, so one thread decoding the next
images while the main thread runs the network keeps the CPU busy without the start-up
cost and pickling of a process pool.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


def map_in_background(fn: Callable[[T], R], items: Iterable[T], buffer: int = 32) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order, computed ahead in one background thread.

    At most ``buffer`` results wait in memory. An exception raised by ``fn`` is re-raised
    here, in the consumer; if the consumer stops early (an error, a break), the thread is
    told to stop and joined, so no work continues behind the caller's back.
    """
    results: queue.Queue[object] = queue.Queue(maxsize=buffer)
    stop = threading.Event()

    def put(value: object) -> None:
        while not stop.is_set():  # a timeout, so a stopped consumer never leaves us blocked
            try:
                results.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                put((fn(item), None))
        except Exception as exc:  # handed over to the consumer, which re-raises it
            put((None, exc))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="pikfix-decode", daemon=True)
    thread.start()
    try:
        while True:
            got = results.get()
            if got is _DONE:
                return
            value, exc = got  # type: ignore[misc]
            if exc is not None:
                raise exc
            yield value
    finally:
        stop.set()
        thread.join()
