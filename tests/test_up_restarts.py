"""`agenthub up` supervises its parts: one that dies is started again after a pause that doubles,
and one that keeps dying stops the stack instead of being restarted forever. Real processes; the
pauses are shortened (the policy, not its timing, is under test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenthub.hub.cli import up
from agenthub.hub.cli.up import Child, Supervisor


@pytest.fixture
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Supervisor]:
    """A supervisor of no parts yet (each test gives it its own); the test runner's signal handlers
    are put back afterwards (the supervisor's stay installed while `up` runs)."""
    monkeypatch.setattr(up, "MAX_RESTART_PAUSE_S", 0.05)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield Supervisor(host="127.0.0.1", port=1, http_port=1, data_dir=tmp_path, model_port=1, model=False)
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def python(name: str, code: str, logs: Path) -> Child:
    return Child(name, [sys.executable, "-c", code], logs / f"{name}.log")


def test_a_part_that_keeps_dying_stops_the_stack_after_the_limit(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    supervisor.hub = python("steady", "import time; time.sleep(120)", tmp_path)
    supervisor.agents = [python("crasher", "print('run', flush=True); raise SystemExit(3)", tmp_path)]
    for child in supervisor.children():
        child.start()
    said: list[str] = []
    try:
        died = supervisor.wait(say=said.append)
        assert died is supervisor.agents[0]
        assert died.how_it_ended() == "exited with code 3"
        log = tmp_path / "crasher.log"
        assert said == [f"crasher exited with code 3; starting it again in 0 s (its log: {log})"] * (
            up.RESTART_LIMIT - 1
        )
        assert log.read_text().splitlines() == ["run"] * up.RESTART_LIMIT  # started, then restarted 4 times
        assert supervisor.hub.exited() is None  # the steady part was left alone
    finally:
        supervisor.stop()
    assert all(child.exited() is not None for child in supervisor.children())


def test_a_killed_part_is_started_again_and_a_stop_still_stops(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    supervisor.hub = python("steady", "import time; time.sleep(120)", tmp_path)
    supervisor.agents = []
    supervisor.hub.start()
    assert supervisor.hub.process is not None
    first = supervisor.hub.process.pid
    said: list[str] = []

    def kill_then_stop() -> None:
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and supervisor.hub.process.pid == first:  # type: ignore[union-attr]
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # as Ctrl-C or `kill` would: wait() returns None

    killer = threading.Thread(target=kill_then_stop)
    killer.start()
    try:
        assert supervisor.wait(say=said.append) is None
    finally:
        killer.join()
        supervisor.stop()
    assert supervisor.hub.process.pid != first
    log = tmp_path / "steady.log"
    assert said == [f"steady was killed by SIGKILL; starting it again in 0 s (its log: {log})"]


def test_a_second_signal_while_stopping_kills_what_is_left_at_once(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    """A part that ignores SIGTERM would be waited for `stop_grace_s` (an hour here); a second
    Ctrl-C kills it at once."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('ready', flush=True); time.sleep(600)"
    )
    supervisor.hub = python("stubborn", code, tmp_path)
    supervisor.hub.stop_grace_s = 3600
    supervisor.agents = []
    supervisor.hub.start()
    while "ready" not in (tmp_path / "stubborn.log").read_text():
        time.sleep(0.05)
    watchdog_fired = threading.Event()
    runners = signal.getsignal(signal.SIGTERM)

    def two_signals() -> None:
        while signal.getsignal(signal.SIGTERM) == runners:  # until wait() handles signals
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # the first: wait() returns, stop() begins
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # the second: what is left is killed
        try:
            supervisor.hub.process.wait(60)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:  # the second signal did nothing: end the test, failed
            watchdog_fired.set()
            supervisor.hub.kill()

    signals = threading.Thread(target=two_signals)
    signals.start()
    assert supervisor.wait(say=print) is None
    try:
        supervisor.stop()
    finally:
        signals.join()
    assert supervisor.hub.exited() == -signal.SIGKILL and not watchdog_fired.is_set()
