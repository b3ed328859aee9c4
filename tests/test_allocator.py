"""The allocator setting: freed memory is reused instead of faulted in again.

Each case runs in a new process (the setting changes the whole process) and counts the page
faults of a loop that allocates, touches and frees three 8-MiB blocks, as torch does with a
batch's tensors. glibc's defaults hand those blocks back every time, so each round faults all
6,144 pages in again; kept, they fault once.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="the setting is glibc's",
)

ROUNDS = 20
PAGES_PER_ROUND = 3 * 8 * 2**20 // os.sysconf("SC_PAGE_SIZE")

LOOP = f"""
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def round_():
    blocks = [libc.malloc(8 * 2**20) for _ in range(3)]
    for b in blocks:
        ctypes.memset(b, 1, 8 * 2**20)
    for b in blocks:
        libc.free(b)
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({ROUNDS}):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

SETUPS = {
    "glibc's defaults": "",
    "keep_freed_memory": "from asdcli.allocator import keep_freed_memory\n"
    "assert keep_freed_memory()\n",
    # the `asd` command sets it before anything else
    "asd": "from asdcli.cli import main\n"
    "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n",
    # featurize's workers are new processes, which set it themselves
    "featurize worker": "from asdcli.featurize import _init_worker\n_init_worker()\n",
    # `asd tune --jobs N` trains in spawned processes; a plan of None makes the trial fail at once
    "tune worker": "from asdcli.tune.workers import _worker_process\n"
    "class Errors:\n    def put(self, item):\n        pass\n"
    "try:\n    _worker_process(None, 1, Errors())\nexcept SystemExit:\n    pass\n",
}


def faults(setup: str, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("GLIBC_TUNABLES", None)
    done = subprocess.run(
        [sys.executable, "-c", setup + LOOP],
        capture_output=True, text=True, env=clean | env, check=True,
    )  # fmt: skip
    return int(done.stdout.strip().splitlines()[-1])


def test_glibc_defaults_fault_every_round() -> None:
    # Without this, the other tests would not show anything.
    assert faults(SETUPS["glibc's defaults"]) > ROUNDS * PAGES_PER_ROUND // 2


@pytest.mark.parametrize("setup", ["keep_freed_memory", "asd", "featurize worker", "tune worker"])
def test_freed_memory_is_reused(setup: str) -> None:
    assert faults(SETUPS[setup]) < PAGES_PER_ROUND // 10


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    ],
)
def test_the_users_own_glibc_settings_win(env: dict[str, str]) -> None:
    setup = "from asdcli.allocator import keep_freed_memory\nassert not keep_freed_memory()\n"
    # The user's small trim threshold hands the blocks back: the faults come back too.
    assert faults(setup, **env) > ROUNDS * PAGES_PER_ROUND // 2


def test_other_tunables_do_not_count_as_the_users_malloc_settings() -> None:
    setup = "from asdcli.allocator import keep_freed_memory\nassert keep_freed_memory()\n"
    assert faults(setup, GLIBC_TUNABLES="glibc.cpu.x86_shstk=off") < PAGES_PER_ROUND // 10
