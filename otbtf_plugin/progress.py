"""Progress and cancel protocol owned by the engine.

Engine functions take a ``progress`` object with two methods and never see a
``QgsFeedback``: the Processing provider adapts one to this protocol, scripts
pass nothing (:class:`NullProgress`) or their own object.
"""

from __future__ import annotations

from typing import Protocol

from .errors import Cancelled


class Progress(Protocol):
    def step(self, done: int, total: int) -> None:
        """``done`` of ``total`` units of work are finished."""

    def cancelled(self) -> bool:
        """True once the user asked to stop."""

    def info(self, message: str) -> None:
        """A line for the user's log (a warning that does not stop the run)."""


class NullProgress:
    """Reports nothing and is never cancelled."""

    def step(self, done: int, total: int) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        pass


def check_cancelled(progress: Progress, what: str) -> None:
    """Raise :class:`Cancelled` naming ``what`` was interrupted, if asked to."""
    if progress.cancelled():
        raise Cancelled(f"cancelled during {what}")
