"""Ctrl-C and SIGTERM during training stop the loop at a step boundary."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger("facemtl.engine.trainer")


class DeferredStop:
    """SIGINT / SIGTERM during training ask the loop to stop at the next step boundary, so a
    checkpoint never holds half a step (BatchNorm statistics of a forward pass whose update was not
    applied); a second signal stops at once (nothing is saved then). Re-entrant: leaving twice is
    harmless."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.signals, self.requested = signals, False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> DeferredStop:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.signals:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after the current step (%s); send it again to stop at once without saving",
                    signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
