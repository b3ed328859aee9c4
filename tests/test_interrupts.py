"""Ctrl-C is never lost: one that lands in a finalizer (where Python ignores exceptions) is
raised again once the finalizer has returned; other ignored exceptions are reported as before."""

import subprocess
import sys

import pytest
import typer.testing

# SIGINT arrives while a finalizer runs Python code: the handler raises KeyboardInterrupt inside
# the finalizer. The main loop after it reports whether the interrupt reached it.
SCRIPT = """\
import os, signal, sys, time, weakref
from asdcli.interrupts import keep_ctrl_c
if "hook" in sys.argv:
    keep_ctrl_c()
    keep_ctrl_c()  # twice: still one hook, one redelivery

def interrupt_here(*_):
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10_000):  # the handler runs at one of these instructions
        pass

class Finalized:
    def __del__(self):
        interrupt_here()

class Failing:
    def __del__(self):
        raise ValueError("an ordinary ignored error")

class Plain:
    pass

where = sys.argv[1]
thing = {"del": Finalized, "other": Failing, "weakref": Plain}[where]()
if where == "weakref":
    ref = weakref.ref(thing, interrupt_here)
try:
    del thing
    if "sleep" in sys.argv:  # the rest of the command waits in a blocking call
        time.sleep(1)
    end = time.monotonic() + 1  # the rest of the command
    while time.monotonic() < end:
        pass
    print("ran to its end")
except KeyboardInterrupt:
    print("interrupted")
"""


def run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "finalizer.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("where", ["del", "weakref"])
def test_without_the_hook_python_swallows_a_ctrl_c_in_a_finalizer(tmp_path, where):
    # the failure the hook exists for (seen in CI: `asd tune` ran on after Ctrl-C)
    done = run(tmp_path, where)
    assert done.stdout.strip() == "ran to its end"
    assert "KeyboardInterrupt" in done.stderr and "Exception ignored" in done.stderr


@pytest.mark.parametrize("where", ["del", "weakref"])
@pytest.mark.parametrize("then", ["compute", "sleep"])
def test_a_ctrl_c_swallowed_by_a_finalizer_is_raised_again_after_it(tmp_path, where, then):
    done = run(tmp_path, where, then, "hook")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "interrupted"
    assert "Exception ignored" not in done.stderr


def test_other_exceptions_in_finalizers_are_still_reported_and_ignored(tmp_path):
    done = run(tmp_path, "other", "hook")
    assert done.stdout.strip() == "ran to its end"
    assert "Exception ignored" in done.stderr and "an ordinary ignored error" in done.stderr


def test_every_command_installs_the_hook():
    from asdcli.cli import app

    before = sys.unraisablehook
    try:
        sys.unraisablehook = sys.__unraisablehook__
        done = typer.testing.CliRunner().invoke(app, ["config", "--help"])
        assert done.exit_code == 0, done.output
        assert getattr(sys.unraisablehook, "_asd_keeps_ctrl_c", False)
    finally:
        sys.unraisablehook = before


def test_a_ctrl_c_that_lands_inside_the_hook_is_redelivered_too(monkeypatch):
    """The hook runs Python code, so a Ctrl-C can land in it (a new one, or the redelivered
    one): it must still end with a redelivery started, never a swallowed interrupt. Also a
    Ctrl-C inside the previous hook, while it reports another ignored error."""
    from types import SimpleNamespace

    import asdcli.interrupts as interrupts

    started = []

    class Thread:  # the first start is interrupted, as if the signal landed right there
        def __init__(self, target, name, daemon):
            self.name = name

        def start(self):
            if not started:
                started.append("interrupted")
                raise KeyboardInterrupt
            started.append(self.name)

    def previous(unraisable):  # reporting the other error is interrupted by a Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(sys, "unraisablehook", previous)
    monkeypatch.setattr(interrupts.threading, "Thread", Thread)
    interrupts.keep_ctrl_c()
    try:
        sys.unraisablehook(SimpleNamespace(exc_value=KeyboardInterrupt()))
        assert started == ["interrupted", "asd-ctrl-c"] and interrupts._lost.is_set()
        started[:] = ["interrupted"]  # from now on every start goes through
        sys.unraisablehook(SimpleNamespace(exc_value=ValueError("other")))
        assert started == ["interrupted", "asd-ctrl-c"]
    finally:
        interrupts._lost.clear()  # no real redelivery was started: nothing to redeliver
