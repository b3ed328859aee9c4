"""The C allocator's settings: keep freed memory for reuse instead of handing it back.

glibc's ``malloc`` returns freed blocks to the operating system (``munmap`` of blocks above
its mmap threshold, a trim of the heap's free top), and the next allocation of that size
faults every page in again. torch allocates and frees its tensors on every batch, so a
training step or a scored clip pays those faults each time. Under a hypervisor a page fault
costs about 3 µs (measured on the project's 2-core KVM machines; bare metal is well under
1 µs). Measured there by ``python -m benchmarks.allocator``, in a new process that loaded a
run: per 10-s clip scored by emb-knn, 2,300-3,000 faults (median 16.5-19.3 ms, against
11.5-12.6 ms kept). On another processor, lstm-ae made 1,930 per clip, and a conv-ae
training step 6,500-10,000, or 17-27 ms of 160-180.

:func:`keep_freed_memory` fixes glibc's two thresholds, so blocks up to 32 MiB come from the
heap and freed memory stays with the process for reuse: those faults fall to almost none. It
costs peak RSS: 16-130 MB more when training a torch detector (about 1.1 GB without).

It changes the whole process, so importing asd does not call it: the ``asd`` command does
(``asdcli.cli.main``), and so do the worker processes of featurize and of ``asd tune --jobs``,
which start afresh. Settings that the user gave glibc (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``) win: then it
does nothing. Other C libraries (macOS, Windows, musl) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's own ceiling for its sliding mmap threshold on 64-bit systems: larger blocks (e.g. a
# whole training set) are still mapped and unmapped, so they never fragment the heap.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _user_set() -> bool:
    return any(v in os.environ for v in USER_SETTINGS) or (
        "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
    )


def keep_freed_memory() -> bool:
    """Set glibc to keep freed memory (see the module's docstring). Returns whether it did:
    False on other C libraries and when the user set glibc's thresholds."""
    if not sys.platform.startswith("linux") or _user_set():
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018 (glibc alone has it; musl has a mallopt too)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Setting either turns off glibc's sliding thresholds, so both are set. 1 means success.
    mapped: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trimmed: bool = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mapped and trimmed
