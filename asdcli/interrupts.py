"""Ctrl-C (SIGINT): held over blocks that must not be cut, and never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when the signal is
handled. Where that is a finalizer (``__del__``, a weakref callback: garbage collection runs
them at any moment, in torch, NumPy or joblib code alike), the exception cannot propagate:
Python prints "Exception ignored in ..." and carries on, and the command the user pressed
Ctrl-C to stop runs to its end. :func:`keep_ctrl_c` turns such a swallowed interrupt back into
a pending signal, which Python raises again at the next instruction outside the finalizer.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["ctrl_c_held", "keep_ctrl_c"]


_lost = threading.Event()  # a Ctrl-C was swallowed and is not redelivered yet
_redelivering = threading.Lock()


def _redeliver() -> None:
    """Send SIGINT to the main thread again until one is not swallowed.

    From a thread, because a signal sent from the hook itself would be handled inside the
    hook, which is as deaf to exceptions as the finalizer was. A real signal (not
    ``_thread.interrupt_main``), so that a blocking call in the main thread returns too.
    """
    # The outer loop: a hook that ran while this thread was leaving found the lock taken.
    while _lost.is_set() and _redelivering.acquire(blocking=False):
        try:
            while _lost.is_set():
                _lost.clear()
                if not callable(signal.getsignal(signal.SIGINT)):
                    return  # SIG_IGN or SIG_DFL now: nothing in Python would handle it
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                # Handled at the main thread's next instruction; if that is in a finalizer
                # again, the hook sets _lost again.
                time.sleep(0.05)
        finally:
            _redelivering.release()


def keep_ctrl_c() -> None:
    """Install the hook that redelivers a Ctrl-C swallowed by a finalizer (see the module
    doc); other ignored exceptions are reported as before. Idempotent."""
    previous = sys.unraisablehook
    if getattr(previous, "_asd_keeps_ctrl_c", False):
        return

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            try:
                previous(unraisable)
                return
            except KeyboardInterrupt:
                pass  # a Ctrl-C handled in there is as lost: redeliver it
        while True:
            try:
                _lost.set()
                threading.Thread(target=_redeliver, name="asd-ctrl-c", daemon=True).start()
                return
            except KeyboardInterrupt:  # the redelivered one (or a new one), handled in here
                continue

    hook._asd_keeps_ctrl_c = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then deliver it: the block is not cut short.

    Only in the main thread (where Python handles signals); elsewhere the block runs as is.
    The store is safe either way (a cut commit leaves the old file and the journal); holding
    the signal keeps a commit, or a clip and its bookkeeping, whole, so an interrupted command
    reports exactly what it saved.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt
