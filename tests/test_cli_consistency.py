"""The command line is consistent: every command that prints data takes `--json`, and `agenthub up`
takes the backend options of `serve` and gives them to its hub process (the demo runs on Kafka)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core

from agenthub.hub.cli.app import app, backend_args
from agenthub.hub.cli.up import Supervisor
from agenthub.hub.server import Hub, free_port
from agenthub.sdk import Agent, HubClient
from agenthub.sdk.pb import operator_pb2 as op
from tests.conftest import eventually
from tests.test_cli import AGENTHUB, agenthub

# Commands that print no data: they run until Ctrl-C, or write JSON lines whatever the options.
NO_JSON = {"serve", "up", "models serve", "threads export"}
BACKEND_OPTIONS = {"--log", "--bootstrap", "--threads-url", "--default-agent"}


def commands(group: typer.core.TyperGroup, prefix: str = "") -> dict[str, Any]:
    """Every leaf command by its full name."""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            found |= commands(command, f"{prefix}{name} ")
        else:
            found[f"{prefix}{name}"] = command
    return found


def options(command: Any) -> set[str]:  # a command of typer's own copy of click
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_every_command_that_prints_data_takes_json() -> None:
    every = commands(typer.main.get_group(app))
    assert set(every) >= NO_JSON
    missing = sorted(
        name for name, command in every.items() if name not in NO_JSON and "--json" not in options(command)
    )
    assert not missing, f"commands without --json: {missing}"


async def test_up_takes_the_backend_options_of_serve_and_passes_them_on(tmp_path: Path) -> None:
    every = commands(typer.main.get_group(app))
    assert options(every["serve"]) >= BACKEND_OPTIONS and options(every["up"]) >= BACKEND_OPTIONS
    code, out, err = await agenthub("up", "--help")
    assert code == 0, err
    assert all(option in out for option in BACKEND_OPTIONS), out

    hub_args = backend_args(
        log="kafka", bootstrap="b1:9092,b2:9092", threads_url=None, default_agent="triage"
    )
    assert hub_args == ["--log", "kafka", "--bootstrap", "b1:9092,b2:9092", "--default-agent", "triage"]
    supervisor = Supervisor(
        host="127.0.0.1", port=1, http_port=2, data_dir=tmp_path, model_port=3, model=False, hub_args=hub_args
    )
    assert supervisor.hub.argv[supervisor.hub.argv.index("serve") :][-6:] == hub_args


async def test_up_refuses_a_bad_backend_in_one_line_before_starting_anything(tmp_path: Path) -> None:
    code, out, err = await agenthub("up", "--log", "rabbit", "--data-dir", str(tmp_path / "data"))
    assert code == 2 and out == ""
    assert err.startswith("error: invalid log") and err.count("\n") == 1, err
    assert not (tmp_path / "data").exists()


async def test_replay_stats_json_has_the_log_offsets(
    hub: Hub, client: HubClient, reference_agents: dict[str, Agent]
) -> None:
    for n in range(3):
        await client.send("calculator", f"{n} + 1")
    ends: dict[str, dict[int, int]] = defaultdict(dict)
    async for event in client.replay(op.Selection()):
        if event.HasField("record"):
            record = event.record
            ends[record.topic][record.partition] = max(
                ends[record.topic].get(record.partition, 0), record.offset + 1
            )
    inbox = f"{hub.settings.topic_prefix}.inbox.calculator"

    async def stats() -> dict[str, dict[str, object]] | None:
        code, out, err = await agenthub("replay", "--stats", "--json", "--hub", hub.address)
        assert code == 0, err
        topics = {t["topic"]: t for t in json.loads(out)["topics"]}
        lags = [int(g.get("lag", 0)) for g in topics[inbox].get("groups", [])]
        return topics if lags and not any(lags) else None  # the dispatcher has committed what it did

    topics = await eventually(stats)
    assert topics is not None, "the calculator's inbox still lags"
    assert int(topics[inbox]["records"]) == 3 == sum(ends[inbox].values())
    for name, partitions in ends.items():
        assert int(topics[name]["records"]) == sum(partitions.values()), name
    by_group: dict[str, int] = defaultdict(int)
    for group in topics[inbox]["groups"]:  # type: ignore[attr-defined]
        by_group[group["group"]] += int(group.get("committed", 0))
    assert len(by_group) >= 2 and set(by_group.values()) == {3}, by_group  # dispatcher and recorder

    code, out, err = await agenthub("replay", "--rebuild-threads", "--json", "--hub", hub.address)
    assert code == 0, err
    progress = json.loads(out)
    assert progress["dry_run"] is True and int(progress["scanned"]) == int(progress["total"]) > 0


async def banner_of(up: asyncio.subprocess.Process) -> str:
    """What `agenthub up` prints until it says it is up (it fails the test if `up` exits first)."""
    assert up.stdout is not None
    printed: list[str] = []
    async with asyncio.timeout(240):
        while not printed or "Press Ctrl-C" not in printed[-1]:
            line = (await up.stdout.readline()).decode()
            assert line, "agenthub up exited early:\n" + "".join(printed)
            printed.append(line)
    return "".join(printed)


@pytest.mark.model
async def test_up_runs_the_demo_on_kafka(tmp_path: Path, kafka_bootstrap: str) -> None:
    port, data_dir = free_port(), tmp_path / "data"
    up = await asyncio.create_subprocess_exec(
        *AGENTHUB, "up", "--port", str(port), "--http-port", str(free_port()),
        "--model-port", str(free_port()), "--data-dir", str(data_dir),
        "--log", "kafka", "--bootstrap", kafka_bootstrap, "--default-agent", "calculator",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert f"127.0.0.1:{port}" in await banner_of(up)
        hub = f"127.0.0.1:{port}"
        key = {"AGENTHUB_KEY_FILE": str(data_dir / "admin.key")}  # where `up` says its admin key is
        code, out, err = await agenthub("send", "calculator", "6 * 7", "--hub", hub, timeout=180, env=key)
        assert (code, out.strip()) == (0, "6 * 7 = 42"), err
        assert (data_dir / "threads.db").exists() and not (data_dir / "log.db").exists()  # the log is Kafka
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(up.communicate(), 120)
    assert up.returncode == 0 and "stopped." in rest.decode(), rest.decode()
