"""`agenthub replay` on a terminal, as an operator sees it: a live progress bar (records/s) on stderr
while records stream, and Ctrl-C stops it cleanly with a summary line and exit code 130.

The CLI runs in a real pseudo-terminal (the bar is drawn only on a terminal)."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
import time

import pytest

from agenthub.hub.server import Hub
from agenthub.hub.topics import Topics

RECORDS = 30_000


async def fill(hub: Hub, topic: str, count: int) -> None:
    """Put `count` records in a topic, in batches the log commits together."""
    for start in range(0, count, 2000):
        await asyncio.gather(
            *(hub.log.produce(topic, b"not an envelope %d" % i, key=b"k") for i in range(start, start + 2000))
        )


def read_until(fd: int, wanted: bytes, timeout: float) -> bytes:
    """Read the terminal until `wanted` shows up (or the time is over); everything read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        seen += chunk
    return seen


# What is tested is the command line on a terminal, the same on any backend; the Tansu test broker
# also reports end offsets that lag what it acknowledged, which would blur the exact totals here.
@pytest.mark.parametrize("backend", ["embedded"])
@pytest.mark.parametrize("threads_url", [None], ids=["sqlite"])
async def test_replay_shows_progress_and_stops_on_ctrl_c(hub: Hub) -> None:
    topic = f"{Topics(hub.settings.topic_prefix).prefix}.archive"  # read by no consumer of the hub
    await fill(hub, topic, RECORDS)
    controller, terminal = pty.openpty()
    child = subprocess.Popen(  # noqa: ASYNC220 - a pty child; its reads run in the executor below
        [sys.executable, "-m", "agenthub.hub.cli", "replay", "--topic", topic, "--hub", hub.address],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        start_new_session=True,
    )
    os.close(terminal)
    try:
        loop = asyncio.get_running_loop()
        shown = await loop.run_in_executor(None, read_until, controller, b"rec/s", 60)
        assert b"replay" in shown and b"rec/s" in shown, "no progress bar on a terminal"
        shown += await loop.run_in_executor(None, read_until, controller, b'"topic"', 60)
        assert b'"topic"' in shown, "records stream as JSON lines under the bar"
        shown += await loop.run_in_executor(None, read_until, controller, b"/%d" % RECORDS, 60)
        assert b"/%d" % RECORDS in shown, "the bar counts records read out of the total"
        os.killpg(child.pid, signal.SIGINT)
        rest = await loop.run_in_executor(None, read_until, controller, b"selected", 30)
        code = await loop.run_in_executor(None, child.wait, 30)
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)
    assert code == 130
    summary = [line for line in rest.decode(errors="replace").splitlines() if "stopped by Ctrl-C" in line]
    assert summary, rest[-500:]
    words = summary[0].split("stopped by Ctrl-C after ")[1].split()
    read, total = int(words[0]), int(words[2])
    assert total == RECORDS and 0 < read < RECORDS  # it stopped part-way, and says where
