"""A worker's first step: it keeps the memory it frees, so a big buffer allocated on every call of a program
pays its page faults once, not on every call (soap.join.keep_freed_memory)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Mallocs, writes and frees a 48 MiB buffer 5 times on a new thread, as XLA:CPU's convolution does its
# scratch, and prints the page faults of the last 4 cycles.
_CYCLES = """
import ctypes, resource, sys, threading
from soap.join import keep_freed_memory
kept = sys.argv[1] == "keep" and keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def cycles():
    for _ in range(5):
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        buffer = libc.malloc(48 << 20)
        ctypes.memset(buffer, 1, 48 << 20)
        libc.free(buffer)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
thread = threading.Thread(target=cycles)
thread.start()
thread.join()
print(kept, faults[-1] - faults[1])
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _CYCLES, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_worker_keeps_the_memory_it_frees():
    pages = (48 << 20) // 4096
    kept, faults = _faults("keep")
    assert kept and faults < pages // 10  # the buffer is served from memory already touched
    # glibc's default maps the buffer afresh every cycle: every page (or huge page, where the kernel gives
    # them to every mapping) faults again.
    assert _faults("default")[1] > max(faults, 4)
