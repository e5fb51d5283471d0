"""The `agenthub` command line as a user runs it: real processes, real ports, real exit codes."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from a2a.types import TaskState

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub, free_port
from agenthub.sdk import HubClient
from tests.conftest import eventually
from tests.test_promises_routing import Gate, gated_agent, state_becomes, submit, until

AGENTHUB = [sys.executable, "-m", "agenthub.hub.cli"]


async def agenthub(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run the CLI, with `env` added to the environment; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *AGENTHUB, *args, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def agenthub_env(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the CLI with extra environment variables."""
    return await agenthub(*args, env=env)


def child_pid(parent: int, module: str) -> int:
    """The process id of `parent`'s child running `python -m module`."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    (pid,) = [int(c) for c in children if module in Path(f"/proc/{c}/cmdline").read_text()]
    return pid


def closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.model
async def test_up_runs_the_demo_and_stops_in_order_on_sigterm(tmp_path: Path) -> None:
    port, http_port, model_port = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    up = await asyncio.create_subprocess_exec(
        *AGENTHUB,
        "up",
        "--port",
        str(port),
        "--http-port",
        str(http_port),
        "--model-port",
        str(model_port),
        "--data-dir",
        str(data),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert up.stdout is not None
    quiet: dict[str, int] = {}  # part -> the probing round in which it stopped listening
    try:
        banner = ""
        async with asyncio.timeout(180):
            while "Press Ctrl-C" not in banner:
                line = await up.stdout.readline()
                assert line, f"agenthub up exited early:\n{banner}"
                banner += line.decode()
        assert f"127.0.0.1:{port}" in banner
        hub = f"127.0.0.1:{port}"
        key = {"AGENTHUB_KEY_FILE": str(data / "admin.key")}  # the banner says where it is
        assert str(data / "admin.key") in banner

        code, out, _ = await agenthub_env(key, "agents", "list", "--hub", hub, "--json")
        assert code == 0
        assert sorted(a["name"] for a in json.loads(out)) == ["calculator", "notes", "triage"]
        ports = {a["name"]: int(a["endpoint"].rsplit(":", 1)[1]) for a in json.loads(out)}
        ports |= {"hub": port, "model": model_port}

        code, out, err = await agenthub_env(key, "send", "triage", "What is 12 + 30?", "--hub", hub)
        assert (code, out.strip()) == (0, "12 + 30 = 42")
        context_id = err.rsplit("thread ", 1)[1].strip(" )\n")

        code, out, _ = await agenthub_env(key, "threads", "show", context_id, "--hub", hub)
        assert code == 0
        assert "user:admin → triage: What is 12 + 30?" in out  # the CLI calls with the admin key up made
        assert "triage → calculator: What is 12 + 30?" in out  # triage delegates with its own key
        assert sorted(p.name for p in (data / "keys").iterdir()) == [
            "calculator.key",
            "notes.key",
            "triage.key",
        ]
        assert "calculator task" in out and "triage → calculator: What is 12 + 30?" in out

        # The tour's streaming commands, with the key `up` made (its hub requires one).
        streamed = ("send", "triage", "What is 12 + 30?", "--stream", "--hub", hub)
        code, out, err = await agenthub_env(key, *streamed)
        assert (code, out.splitlines()[-1]) == (0, "[completed] 12 + 30 = 42"), err
        replayed = ("replay", "--thread", context_id, "--kind", "request", "--hub", hub)
        code, out, err = await agenthub_env(key, *replayed)
        requests = [json.loads(line)["envelope"] for line in out.splitlines()]
        assert code == 0 and sorted(r["recipient"] for r in requests) == ["calculator", "triage"], err

        # A part that dies is started again: the calculator, killed, is back and answers.
        os.kill(child_pid(up.pid, "agenthub.agents.calculator"), signal.SIGKILL)
        said = (await asyncio.wait_for(up.stdout.readline(), 30)).decode()
        assert said.startswith("calculator was killed by SIGKILL; starting it again in 1 s"), said

        async def calculator_answers() -> bool:
            code, out, _ = await agenthub_env(key, "send", "calculator", "6 * 7", "--hub", hub)
            return (code, out.strip()) == (0, "6 * 7 = 42")

        assert await eventually(calculator_answers, timeout=90, interval=0.5)
        code, out, _ = await agenthub_env(key, "agents", "list", "--hub", hub, "--json")
        (calculator,) = [a for a in json.loads(out) if a["name"] == "calculator"]
        (serving,) = [r["endpoint"] for r in calculator["replicas"] if r["state"] == "up"]
        ports["calculator"] = int(serving.rsplit(":", 1)[1])

        assert not any(closed(p) for p in ports.values())
        up.send_signal(signal.SIGTERM)
        deadline, round_ = time.monotonic() + 120, 0
        while len(quiet) < len(ports) and time.monotonic() < deadline:
            round_ += 1
            quiet |= {name: round_ for name, p in ports.items() if name not in quiet and closed(p)}
            await asyncio.sleep(0.005)
    finally:
        if up.returncode is None and not quiet:
            up.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(up.communicate(), 60)
    assert up.returncode == 0, rest.decode()
    assert rest.decode().strip().endswith("stopped.")
    # Each part is stopped only once the one before it has exited: reverse start order.
    rounds = [quiet[name] for name in ("triage", "notes", "calculator", "hub", "model")]
    assert rounds == sorted(rounds) and rounds[0] < rounds[3] < rounds[4], quiet
    logs = data / "logs"
    names = ["calculator.log", "hub.log", "model.log", "notes.log", "triage.log"]
    assert sorted(p.name for p in logs.iterdir()) == names
    assert "hub stopped" in (logs / "hub.log").read_text()


@pytest.mark.usefixtures("reference_agents")
async def test_send_and_read_a_thread(hub: Hub) -> None:
    code, out, err = await agenthub("send", "calculator", "6 * 7", "--hub", hub.address, "--json")
    assert code == 0, err
    task = json.loads(out)
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"

    code, out, _ = await agenthub("threads", "list", "--hub", hub.address)
    assert code == 0 and task["context_id"] in out and "6 * 7" in out

    code, out, _ = await agenthub("threads", "show", task["context_id"], "--hub", hub.address, "--json")
    assert code == 0
    assert [m["text"] for m in json.loads(out)["messages"]][-1] == "6 * 7 = 42"

    code, out, _ = await agenthub("send", "calculator", "1 + 2", "--hub", hub.address, "--stream")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("task ") and lines[-1] == "[completed] 1 + 2 = 3"


@pytest.mark.usefixtures("reference_agents")
@pytest.mark.parametrize(
    ("args", "exit_code", "words"),
    [
        (["send", "nobody", "hi"], 4, "no agent named 'nobody'"),
        (["send", "calculator", "   "], 2, "empty"),
        (["threads", "show", "no-such-thread"], 4, "no thread with id"),
        (["threads", "list", "--page", "xyz"], 2, "invalid page_token"),
    ],
)
async def test_user_mistakes_get_one_line_and_an_exit_code(
    hub: Hub, args: list[str], exit_code: int, words: str
) -> None:
    code, out, err = await agenthub(*args, "--hub", hub.address)
    assert code == exit_code
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err
    assert "Traceback" not in err + out


async def test_version() -> None:
    code, out, err = await agenthub("--version")
    assert (code, out, err) == (0, f"agenthub {importlib.metadata.version('agenthub')}\n", "")


async def test_unreachable_hub_is_one_line() -> None:
    code, _, err = await agenthub("agents", "list", "--hub", f"127.0.0.1:{free_port()}")
    assert code == 5
    assert err.strip() == err.strip().splitlines()[0] and "cannot reach the hub" in err


@pytest.mark.parametrize(
    ("args", "exit_code", "words"),
    [
        (["--log", "kafka", "--bootstrap", "127.0.0.1:{port}"], 5, "cannot reach the Kafka broker"),
        (["--log", "kafka"], 2, "needs --bootstrap"),
        (
            ["--threads-url", "postgresql://nobody@127.0.0.1:{port}/x"],
            5,
            "cannot reach the PostgreSQL thread store",
        ),
        (["--threads-url", "mysql://x"], 2, "unsupported threads URL"),
    ],
    ids=["unreachable-broker", "no-bootstrap", "unreachable-postgres", "bad-threads-url"],
)
async def test_serve_mistakes_end_in_one_line(
    tmp_path: Path, args: list[str], exit_code: int, words: str
) -> None:
    port = free_port()
    argv = [a.format(port=port) for a in args]
    code, _, err = await agenthub(
        "serve", "--port", "0", "--http-port", "0", "--data-dir", str(tmp_path), *argv
    )
    assert code == exit_code  # 2: bad configuration, 5: a part it needs is unreachable
    ours = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and words in ours[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(("event_loop", "module"), [("auto", "uvloop"), ("asyncio", "asyncio")])
async def test_serve_runs_on_its_event_loop_logs_client_mistakes_in_a_line_and_stops_cleanly(
    tmp_path: Path, event_loop: str, module: str
) -> None:
    port, http_port = free_port(), free_port()
    argv = ["serve", "--port", str(port), "--http-port", str(http_port), "--data-dir", str(tmp_path)]
    process = await asyncio.create_subprocess_exec(
        *AGENTHUB, *argv, env={**os.environ, "AGENTHUB_EVENT_LOOP": event_loop},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert banner.startswith("hub serving A2A gRPC on 127.0.0.1:"), banner
        code, out, _ = await agenthub("agents", "list", "--hub", f"127.0.0.1:{port}", "--json")
        assert code == 0 and json.loads(out) == []
        bad = b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": 7}}'
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            reply = await http.post("/agents/x/", content=bad, headers={"content-type": "application/json"})
        assert reply.json()["error"]["code"] == -32602  # the caller's mistake, answered as such
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    started = next(line for line in err.decode().splitlines() if "hub started" in line)
    assert f"event_loop={module}" in started, started
    assert "Traceback" not in err.decode()  # a client's malformed params are one warning line
    assert "a request's params did not parse" in err.decode()


async def test_a_second_ctrl_c_quits_serve_at_once_and_loses_nothing(tmp_path: Path) -> None:
    """Ctrl-C with an agent call in flight: `serve` says it is stopping; a second Ctrl-C quits at
    once (exit 130) instead of waiting for the call; the next hub on that data completes the task."""
    port, http_port = free_port(), free_port()
    argv = ["serve", "--port", str(port), "--http-port", str(http_port), "--data-dir", str(tmp_path)]
    process = await asyncio.create_subprocess_exec(
        *AGENTHUB, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    await asyncio.wait_for(process.stdout.readline(), 60)  # the banner: serving
    address, gate = f"127.0.0.1:{port}", Gate()
    async with gated_agent("gated", address, gate), HubClient(address) as client:
        task = await submit(client, "gated", "long")
        assert await until(lambda: gate.started == ["long"])
        process.send_signal(signal.SIGINT)
        said = ""
        while "stopping: calls in flight" not in said:
            said = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert said.strip().endswith("get a few seconds to end (Ctrl-C again: quit at once)"), said
        process.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
        assert await process.wait() == 130 and rest.strip().endswith("quitting at once"), rest
        assert "Traceback" not in rest
        gate.open()
        async with Hub(HubSettings(port=port, http_port=http_port, data_dir=tmp_path)):
            done = await state_becomes(client, "gated", task.id, TaskState.TASK_STATE_COMPLETED)
    assert done.status.message.parts[0].text == "held: long"


async def test_an_unknown_event_loop_is_one_line(tmp_path: Path) -> None:
    code, _, err = await agenthub_env(
        {"AGENTHUB_EVENT_LOOP": "trio"}, "serve", "--port", "0", "--data-dir", str(tmp_path)
    )
    assert code == 2 and err.strip().splitlines() == [
        "error: invalid event_loop: Input should be 'auto', 'uvloop' or 'asyncio'"
    ]


async def test_a_commit_interval_of_zero_is_refused_in_one_line(tmp_path: Path) -> None:
    """0 made the dispatcher's commit loop spin on the event loop without sleeping."""
    code, _, err = await agenthub_env(
        {"AGENTHUB_COMMIT_INTERVAL_MS": "0"}, "serve", "--port", "0", "--data-dir", str(tmp_path)
    )
    assert code == 2 and err.strip().splitlines() == [
        "error: invalid commit_interval_ms: Input should be greater than or equal to 1"
    ]


async def test_a_stream_the_hub_cuts_names_its_task_which_is_not_lost(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """`send --stream` while the hub stops: one line naming the task and its thread (exit 5), and
    the task, still in the log, completes once a hub runs on that data again."""
    settings = hub_settings(tmp_path / "hub", port=free_port(), http_port=free_port(), drain_timeout_s=0.5)
    gate = Gate()
    hub = Hub(settings)
    await hub.start()
    async with gated_agent("gated", hub, gate):
        try:
            streaming = await asyncio.create_subprocess_exec(
                *AGENTHUB, "send", "gated", "long", "--stream", "--hub", hub.address,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert await until(lambda: gate.started == ["long"])
        finally:
            await hub.stop()
        out, err = await asyncio.wait_for(streaming.communicate(), 60)
        assert streaming.returncode == 5, err
        task_id = out.decode().split()[1]  # "task <id> [submitted]"
        (line,) = err.decode().splitlines()
        gate.open()
        async with Hub(settings) as again, HubClient(again.address) as client:
            done = await state_becomes(client, "gated", task_id, TaskState.TASK_STATE_COMPLETED)
            assert done.status.message.parts[0].text == "held: long"
    assert line.startswith(f"error: the hub closed the stream before task {task_id} ended ("), line
    assert line.endswith(f"goes on when the hub is back: `agenthub threads show {done.context_id}`"), line
