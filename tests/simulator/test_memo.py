"""simulator.memo.memoized: one cache per object, keyed by the arguments, gone with the object."""

import gc
import weakref

from simulator.memo import memoized


class Squares:
    def __init__(self):
        self.calls = 0

    @memoized
    def square(self, x: int) -> int:
        self.calls += 1
        return x * x


def test_a_memoized_method_computes_each_argument_once_per_object():
    first, second = Squares(), Squares()
    assert [first.square(3), first.square(3), first.square(4)] == [9, 9, 16]
    assert first.calls == 2
    assert second.square(3) == 9 and second.calls == 1  # the caches are per object


def test_the_cache_does_not_keep_its_object_alive():
    squares = Squares()
    squares.square(2)
    alive = weakref.ref(squares)
    del squares
    gc.collect()
    assert alive() is None
