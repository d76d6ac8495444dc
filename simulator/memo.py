"""Per-object memoization of methods by their arguments (simulator.splits.GraphSplits and
simulator.taskgraph.TaskGraphBuilder ask the same questions of a graph millions of times during a search).

functools.lru_cache on a class's method would key on the object too and keep every object alive for the
process; `memoized` gives each object its own functools.cache, which lives and dies with it.
"""

from __future__ import annotations

import functools


class memoized:  # noqa: N801 (a decorator, named like functools.cached_property)
    """A method whose results are cached per object, keyed by its (hashable) arguments: at the first
    access on an object, the bound method wrapped in functools.cache is stored on the object under the
    method's name, so later accesses find it there without this descriptor."""

    def __init__(self, method):
        self.method = method
        functools.update_wrapper(self, method)

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        cached = instance.__dict__[self.name] = functools.cache(self.method.__get__(instance, owner))
        return cached
