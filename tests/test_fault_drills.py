"""Fault drills under concurrent load, with real processes (hub, agent, PostgreSQL, Kafka broker).

Each test runs one drill of tests/drill_runs.py (scripts/drill.py prints the same drills' figures)
and holds the hub to what issue 10 asks: no accepted request lost, failed or answered twice, a
clear answer for what cannot be taken, readiness that tells the truth, and recovery on its own.
The message of a failed assertion carries the drill's figures and the hub log's tail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests import drill_runs
from tests.drill_runs import Run, Timing


def explain(run: Run) -> str:
    """The figures and the hub's own log lines (the Kafka client's reconnect noise left out)."""
    lines = [line for line in run.hub_log.splitlines() if ":aiokafka" not in line]
    tail = "\n".join(lines[-25:])
    return f"\n{run.figures.line()}\n{run.figures.notes}\n--- hub log (tail) ---\n{tail}"


def assert_nothing_lost(run: Run) -> None:
    figures = run.figures
    assert figures.accepted > 0, explain(run)
    assert figures.lost == 0, f"accepted requests never ended{explain(run)}"
    assert figures.failed == 0, f"accepted requests failed{explain(run)}"
    assert figures.completed == figures.accepted, explain(run)
    assert figures.duplicated == 0, f"requests delivered or recorded twice{explain(run)}"


def assert_readiness_told_the_truth(run: Run, part: str) -> None:
    """NOT_SERVING (gRPC health) and 503 naming `part` (/readyz) while it was down; SERVING after."""
    fault_at, repaired_at = run.outage
    assert "NOT_SERVING" in run.readings.health_between(fault_at, repaired_at), explain(run)
    bodies = [body for status, body in run.readings.readyz_between(fault_at, repaired_at) if status == 503]
    assert any(part in body for body in bodies), f"/readyz never named {part!r}{explain(run)}"
    assert run.readings.first_serving_after(repaired_at) is not None, explain(run)


@pytest.mark.parametrize("backend", ["embedded"])
async def test_store_restart_loses_nothing_and_threads_stay_whole(
    tmp_path: Path, log_settings: dict[str, Any]
):
    run = await drill_runs.store_restart(tmp_path, log_settings, senders=12, timing=Timing(outage_s=5.0))
    assert_nothing_lost(run)
    assert run.figures.notes["rebuild_would_write"] == 0, f"the store missed records{explain(run)}"
    answers = run.readings.get_task_codes()
    assert "NOT_FOUND" not in answers, f"GetTask said NOT_FOUND for an existing task{explain(run)}"
    assert "UNAVAILABLE" in answers, f"GetTask never said the store was unavailable{explain(run)}"
    assert_readiness_told_the_truth(run, "thread store")


KILLED_BROKER_ON_S3 = pytest.mark.xfail(
    reason="Tansu 0.6.0 on S3 (moto 5.2.5): on some machines its consumer groups take ~5 s per join and,"
    " after the kill, hand the recorder nothing for minutes; the code of the last green CI (a1d3bb6)"
    " fails the same way there, the `cut` mode proves the hub's side on every machine",
    strict=False,
)


# The kill drill's load and outage last 20 s, and the broker's restart on S3 a few more; where Tansu
# on S3 stalls (every run on the slower machines), it held a test worker and moto a core for its
# whole 150 s, which put the suite near CI's 30 minutes. So it runs where asked for
# (AGENTHUB_TEST_BROKER_KILL=1); `scripts/drill.py broker-outage --broker kill` runs it too.
KILL_DRILL = [
    KILLED_BROKER_ON_S3,
    pytest.mark.timeout(150),
    pytest.mark.skipif(
        os.environ.get("AGENTHUB_TEST_BROKER_KILL") != "1",
        reason="the broker-kill drill (Tansu on S3) runs with AGENTHUB_TEST_BROKER_KILL=1",
    ),
]


@pytest.mark.parametrize(
    ("mode", "senders"),
    [("cut", 12), pytest.param("kill", 2, marks=KILL_DRILL)],
)
async def test_broker_outage_loses_nothing_and_refuses_new_sends(tmp_path: Path, mode: str, senders: int):
    """Kafka only; the drill runs a broker of its own: in memory behind a link it cuts, or on S3
    (moto), killed and restarted with its data. Tansu 0.6.0 on S3 stops handing a consumer the
    records of a partition past about its hundredth (plain aiokafka: 100 read in 0.7 s, of the next
    100 two in 60 s), fault or not; so that one gets two senders, which stay below it."""
    run = await drill_runs.broker_outage(tmp_path, mode=mode, senders=senders, timing=Timing(outage_s=15.0))
    assert_nothing_lost(run)
    refused = run.figures.refused
    assert refused and set(refused) == {"UNAVAILABLE"}, f"new sends not refused as UNAVAILABLE{explain(run)}"
    broken = run.figures.notes["streams_without_their_end"]
    assert set(broken) <= {"UNAVAILABLE"}, f"streams hung instead of ending with an error{explain(run)}"
    assert_readiness_told_the_truth(run, "log")


async def test_poison_records_on_every_topic_stop_nothing(tmp_path: Path, log_settings: dict[str, Any]):
    run = await drill_runs.poison_records(tmp_path, log_settings, senders=8)
    for phase, figures, problems in run.extra["phases"]:
        assert figures.accepted > 0 and figures.completed == figures.accepted, f"{phase}{explain(run)}"
        assert figures.lost == figures.failed == figures.duplicated == 0, f"{phase}{explain(run)}"
        assert problems == {}, f"{phase}: parts still down {problems}{explain(run)}"
    kept = run.extra["kept"]  # read after the restart: each poison record kept once, with its reason
    (inbox_reason,) = kept["inbox"]["dlq"]
    assert "unreadable" in inbox_reason, kept
    (replies_reason,) = kept["replies"]["parked"]
    assert "not an envelope" in replies_reason, kept


async def test_agent_restart_completes_every_request_once(tmp_path: Path, log_settings: dict[str, Any]):
    run = await drill_runs.agent_restart(tmp_path, log_settings, senders=12, timing=Timing(outage_s=3.0))
    assert_nothing_lost(run)
    assert run.figures.redelivered > 0, f"no request was in flight when the agent died{explain(run)}"


async def test_hub_restart_answers_as_soon_as_it_says_ready(tmp_path: Path, log_settings: dict[str, Any]):
    run = await drill_runs.hub_restart(tmp_path, log_settings, senders=8)
    assert run.extra["probe"]["answered"], f"first send after SERVING: {run.extra['probe']}{explain(run)}"
    assert_nothing_lost(run)
