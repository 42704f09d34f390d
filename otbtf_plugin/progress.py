"""Progress and cancel protocol owned by the engine.

Engine functions take a ``progress`` object and never see a ``QgsFeedback``: the
Processing provider adapts one to this protocol, scripts pass nothing
(:class:`NullProgress`) or their own object. Warnings go through :func:`warn` (a
progress object's ``warn``; an object without one gets the line through ``info``,
prefixed "warning: ").
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from .errors import Cancelled


class Progress(Protocol):
    def step(self, done: int, total: int) -> None:
        """``done`` of ``total`` units of work are finished."""

    def cancelled(self) -> bool:
        """True once the user asked to stop."""

    def info(self, message: str) -> None:
        """A line for the user's log."""

    def warn(self, message: str) -> None:
        """Something the user should act on that does not stop the run (QGIS shows it as a
        warning)."""


WARNING = "warning: "  # how a warning reads in a plain log, and in notes collected as text


def warn(progress, message: str) -> None:
    """``message`` as a warning: ``progress.warn``, or ``info`` with the prefix for a
    progress object of a script that has no ``warn``."""
    method = getattr(progress, "warn", None)
    if method is not None:
        method(message)
    else:
        progress.info(WARNING + message)


def tell(progress, line: str) -> None:
    """A line collected as text for the log: a warning when it starts with ``warning: ``."""
    if line.startswith(WARNING):
        warn(progress, line[len(WARNING) :])
    else:
        progress.info(line)


class NullProgress:
    """Reports nothing and is never cancelled."""

    def step(self, done: int, total: int) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


def mebibytes(count: float) -> str:
    """A byte count for the log: "37 MiB", "134 KiB"."""
    return f"{count / 2**20:.0f} MiB" if count >= 2**20 else f"{max(1, round(count / 2**10))} KiB"


def check_cancelled(progress: Progress, what: str) -> None:
    """Raise :class:`Cancelled` naming ``what`` was interrupted, if asked to."""
    if progress.cancelled():
        raise Cancelled(f"cancelled during {what}")


class ScaledProgress:
    """Maps the steps of one phase onto ``[start, start + span]`` of a whole run
    (e.g. two passes: 0-0.5 then 0.5-1), reported in thousandths."""

    def __init__(self, progress: Progress, start: float, span: float):
        self.progress, self.start, self.span = progress, start, span

    def step(self, done: int, total: int) -> None:
        fraction = self.start + self.span * done / max(total, 1)
        self.progress.step(round(1000 * fraction), 1000)

    def cancelled(self) -> bool:
        return self.progress.cancelled()

    def info(self, message: str) -> None:
        self.progress.info(message)

    def warn(self, message: str) -> None:
        warn(self.progress, message)


@contextmanager
def sigterm_cancels() -> Iterator[None]:
    """While the block runs, SIGTERM (``kill``, ``timeout``, batch schedulers) stops the run
    as Ctrl-C does: :class:`Cancelled` is raised in the main thread, whatever it waits on,
    so every output's temporaries are removed on the way out. A second SIGTERM gets the
    previous handler (by default: the process ends at once). Outside the main thread (a
    QGIS task) nothing is changed: the host application owns its signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        raise Cancelled("terminated (SIGTERM): the run stopped and removed its temporary files")

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
