"""When a training run stops besides its step budget: on a signal, and on a scheduled session's budget."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from facedag.records import StageFailed


class StopSignal:
    """Turns the first SIGTERM/SIGINT into a flag the loop checks between steps; a second one
    gets the default action (SIGINT: KeyboardInterrupt; SIGTERM: terminate)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handler(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)



SESSION_ENV = "FACEDAG_TRAIN_MINUTES"


def session_budget(max_minutes: float) -> float:
    """This run's budget in minutes: train.max_minutes, or a scheduled session's shorter one.

    The train-session deployment (flows/train_session.py) sets it from train.session_minutes,
    so each scheduled run trains for one session, checkpoints and exits, and the next resumes.
    """
    raw = os.environ.get(SESSION_ENV)
    if not raw:
        return max_minutes
    try:
        session = float(raw)
    except ValueError:
        raise StageFailed(f"{SESSION_ENV}={raw!r} is not a number of minutes") from None
    if not session > 0:
        raise StageFailed(f"{SESSION_ENV}={raw!r} must be more than 0 minutes")
    return min(max_minutes, session)


