"""How `agenthub replay` shows its work: JSONL on stdout, a progress bar on stderr, a summary at the end
(also after Ctrl-C, which stops the stream cleanly: every record is applied whole or not at all)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from agenthub.hub.operators.records import raw_json
from agenthub.sdk.errors import HubUnavailable
from agenthub.sdk.pb import operator_pb2 as op

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class ProgressBar:
    """A records/s progress bar on stderr (only on a terminal) and a one-line summary at exit."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.last = op.Progress()
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rec/s"), TimeRemainingColumn(),
            console=stderr, transient=True, disable=not stderr.is_terminal,
        )  # fmt: skip
        self._task = self._bar.add_task(what, total=None, rate="-")

    def __enter__(self) -> ProgressBar:
        self._bar.start()
        return self

    def update(self, progress: op.Progress) -> None:
        self.last = progress
        task = self._bar.tasks[0]
        rate = f"{task.speed:.0f}" if task.speed else "-"
        self._bar.update(self._task, completed=progress.scanned, total=progress.total or None, rate=rate)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.stop()
        stopped = exc_type is not None and issubclass(exc_type, (asyncio.CancelledError, KeyboardInterrupt))
        if exc_type is None or stopped:
            stderr.print(summary(self.what, self.last, stopped=stopped))


def summary(what: str, p: op.Progress, *, stopped: bool = False) -> str:
    """One line that says what was done (or, in a dry run, what would be)."""
    head = f"{what}: stopped by Ctrl-C after" if stopped else f"{what}:"
    line = f"{head} {p.scanned} of {p.total} records read, {p.matched} selected"
    if what != "replay":
        verb = "would write" if p.dry_run else "wrote"
        line += f", {verb} {p.written}, {p.skipped} already there"
        if p.dry_run:
            line += " (dry run: add --apply to write)"
    return line


async def print_records(events: AsyncIterator[op.ReplayEvent]) -> None:
    """Replayed records, as they are in the log, as JSON lines on stdout."""
    with ProgressBar("replay") as bar:
        async for event in events:
            if event.HasField("progress"):
                bar.update(event.progress)
            elif event.HasField("raw"):
                lines = [raw_json(raw) for raw in event.raw.records]
                sys.stdout.buffer.write(b"\n".join(lines) + b"\n")
            else:  # a hub that ignores `raw` sends records rendered its way: say so, print nothing wrong
                raise HubUnavailable("this hub predates raw replay: upgrade it to the CLI's version")
    sys.stdout.flush()


async def follow(progress: AsyncIterator[op.Progress], what: str) -> None:
    """A writing operation's progress, then its summary."""
    with ProgressBar(what) as bar:
        async for update in progress:
            bar.update(update)
