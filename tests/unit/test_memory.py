"""training.memory: freed memory stays in the process, so repeated large allocations stop faulting in pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bertcli.training.memory import keep_freed_memory

# Allocates, touches and frees a 24 MB tensor 30 times, as a training step does with its logits; prints the page
# faults of the last 25 rounds (the first five settle malloc). glibc adapts its mmap threshold to the sizes freed,
# so whether the defaults fault every round varies from run to run; the probe first pins the threshold at glibc's
# starting value (128 KiB), where every round maps fresh pages, then ("fix") calls keep_freed_memory.
PROBE = """
import ctypes, resource, sys, torch
from bertcli.training.memory import keep_freed_memory
assert ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
if sys.argv[1] == "fix":
    assert keep_freed_memory()
for i in range(30):
    if i == 5:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(6_000_000).fill_(1.0)
    y = x * 2
    del x, y
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}  # no MALLOC_* from the caller
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keeping_freed_memory_stops_repeated_allocations_from_faulting_in_pages():
    pages = 25 * 2 * 24_000_000 // 4096  # what 25 rounds touch: 293,000 pages of 4 KiB
    assert _faults("pinned") > pages // 2  # every round faults its pages in afresh
    assert _faults("fix") < pages // 10  # the heap keeps them (0 to 11,719 seen)


def test_a_users_own_malloc_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert not keep_freed_memory()
