"""Background loading a few items ahead, for the data loaders (models.data, models.token_data).

    for batch in prefetch(decode, chunks, ahead=4): ...   # decode(chunk) runs in threads, yielded in order
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

T, R = TypeVar("T"), TypeVar("R")


def prefetch(load: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """Yield load(item) for each item, in order, loaded in background threads up to `ahead` items early.

    One thread per item in flight, at most one per core. Closing the generator (or dropping it) cancels the
    queued loads and joins the threads; an exception in `load` is raised here, in the consumer.
    """
    assert ahead >= 1, ahead
    items = iter(items)
    pool = ThreadPoolExecutor(min(ahead, os.cpu_count() or 1), thread_name_prefix="soap-data")
    try:
        queued = deque(pool.submit(load, item) for item in islice(items, ahead))
        while queued:
            result = queued.popleft().result()
            queued.extend(pool.submit(load, item) for item in islice(items, 1))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
