"""What every `agenthub` command shares: the hub and JSON options, and how a failure ends a command
(one readable line on stderr, the exit code of the error table)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn

import typer

from agenthub.sdk.errors import AgentHubError, status_of

HubOpt = Annotated[str, typer.Option("--hub", envvar="AGENTHUB_HUB", help="hub gRPC address HOST:PORT")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
DEFAULT_HUB = "127.0.0.1:50051"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def show_version(asked: bool) -> None:
    """`agenthub --version`: the installed package's version, then exit."""
    if asked:
        typer.echo(f"agenthub {importlib.metadata.version('agenthub')}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool, typer.Option("--version", callback=show_version, is_eager=True, help="print the version and exit")
]


def fail(error: BaseException) -> NoReturn:
    """Print one line for the user and exit with the error's code."""
    message = error.message if isinstance(error, AgentHubError) else str(error)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status_of(error).exit_code)


def run(coro: Coroutine[Any, Any, Any], event_loop: str = "asyncio") -> Any:
    """Run a command's coroutine on the named event loop (`auto`: uvloop where it is installed)."""
    try:
        with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
            return runner.run(coro)
    except AgentHubError as exc:
        fail(exc)


async def until_stopped(work: Coroutine[Any, Any, None] | None = None, *, winding_down: str = "") -> None:
    """Return on SIGINT or SIGTERM (a clean stop: exit 0), cancelling `work`; or when `work` ends by
    itself, with its error if it failed. Without `work`, wait for the signal alone. After the
    signal, `winding_down` is said (if any), and a second signal quits at once (exit 130)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    running = asyncio.ensure_future(work) if work is not None else None
    waits = {stopped} if running is None else {stopped, running}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(stopped, return_exceptions=True)
    if stop.is_set():
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, _quit_at_once)
        if winding_down:
            typer.echo(winding_down, err=True)
    if running is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await running  # ended by itself: its error says why


def _quit_at_once() -> None:
    """A second Ctrl-C while stopping: end now, without waiting for calls in flight. What the hub
    acknowledged is in its log, and what it was doing is delivered again."""
    typer.echo("quitting at once", err=True)
    os._exit(130)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for `uvloop` (and for `auto` where it is installed); None is asyncio's own."""
    if name == "asyncio" or (name == "auto" and importlib.util.find_spec("uvloop") is None):
        return None
    import uvloop

    return uvloop.new_event_loop
