"""Stopping on a signal never deadlocks on the logger, whatever the main thread was doing when it arrived."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

import shared.runtime as runtime


class LockedLog:
    """A logger whose lock the test holds, as the main thread holds structlog's in the middle of writing a line."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lines: list[str] = []

    def info(self, event: str, **_: Any) -> None:
        with self.lock:
            self.lines.append(event)


@pytest.mark.timeout(20)
def test_sigterm_in_the_middle_of_a_log_line_sets_the_stop_flag_and_logs_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    locked = LockedLog()
    monkeypatch.setattr(runtime, "log", locked)
    stop = threading.Event()
    restore = runtime.install_signal_handlers(stop, "ingest")
    try:
        with locked.lock:  # the main thread is writing a log line when SIGTERM arrives
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5)
            assert locked.lines == []
        for _ in range(100):
            if locked.lines:
                break
            threading.Event().wait(0.05)
        assert locked.lines == ["ingest.stop_requested"]
    finally:
        restore()
