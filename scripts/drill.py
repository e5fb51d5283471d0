"""Fault drills against real processes, printing their figures for the README's reliability section.

    python scripts/drill.py store-restart  [--log embedded|kafka] [--senders 12] [--outage 5]
    python scripts/drill.py broker-outage  [--broker cut|kill] [--senders 12] [--outage 45]
    python scripts/drill.py poison         [--log embedded|kafka] [--senders 8]
    python scripts/drill.py agent-restart  [--log embedded|kafka] [--senders 12] [--outage 3]
    python scripts/drill.py hub-restart    [--log embedded|kafka] [--senders 8]
    python scripts/drill.py all            (each drill on every backend it concerns)

Each prints one line per drill: accepted, completed, failed, lost, duplicated, redelivered (handed
to the agent again after the agent or the hub died with it, as at-least-once intends), refused
sends (by gRPC code, with the slowest refusal), and the time to recover (from the repair until
every request accepted before it had ended), then notes (what readiness said during the outage,
streams that ended without their final event, ...); `--json` prints JSON lines instead.
Everything runs on loopback in a temporary folder (`--keep DIR` leaves it, with the hub's and the
agent's logs): its own PostgreSQL, Tansu broker (in memory behind a link the drill cuts, or with
`--broker kill` on S3 served by moto, killed and restarted), hub and agent processes.
Exit code 1 when a drill lost, failed or duplicated a request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests package: drill machinery

from agenthub.sdk.logs import configure_logging
from tests import drill_runs
from tests.broker import start_tansu
from tests.drill_runs import Run

DrillFn = Callable[[Path, argparse.Namespace, dict[str, Any]], Awaitable[Run]]
DRILLS: dict[str, tuple[DrillFn, tuple[str, ...]]] = {
    "store-restart": (
        lambda d, a, s: drill_runs.store_restart(d, s, senders=a.senders or 12, timing=timing(a, 5.0)),
        ("embedded",),
    ),
    "broker-outage": (
        lambda d, a, _: drill_runs.broker_outage(
            d, mode=a.broker, senders=a.senders or (2 if a.broker == "kill" else 12), timing=timing(a, 45.0)
        ),
        ("kafka",),
    ),
    "poison": (
        lambda d, a, s: drill_runs.poison_records(d, s, senders=a.senders or 8),
        ("embedded", "kafka"),
    ),
    "agent-restart": (
        lambda d, a, s: drill_runs.agent_restart(d, s, senders=a.senders or 12, timing=timing(a, 3.0)),
        ("embedded", "kafka"),
    ),
    "hub-restart": (
        lambda d, a, s: drill_runs.hub_restart(d, s, senders=a.senders or 8),
        ("kafka", "embedded"),
    ),
}


def timing(args: argparse.Namespace, outage_s: float) -> drill_runs.Timing:
    """The drill's timing, with `--outage` (seconds the part stays down) when given."""
    return drill_runs.Timing(outage_s=args.outage or outage_s)


@contextmanager
def log_settings(backend: str, drill: str) -> Iterator[dict[str, Any]]:
    """The hub's log: embedded, or a Tansu broker of the drill's own (the broker drill starts its
    own broker on S3)."""
    if backend == "embedded" or drill == "broker-outage":
        yield {"log": backend}
        return
    with start_tansu() as bootstrap:
        yield drill_runs.kafka_settings(bootstrap)


async def run_one(name: str, backend: str, args: argparse.Namespace) -> Run:
    drill, _ = DRILLS[name]
    with log_settings(backend, name) as settings:
        if args.keep:  # the hub's and the agent's logs stay there for a look afterwards
            workdir = Path(tempfile.mkdtemp(prefix=f"{name}-{backend}-", dir=args.keep))
            return await drill(workdir, args, settings)
        with tempfile.TemporaryDirectory(prefix=f"drill-{name}-") as tmp:
            return await drill(Path(tmp), args, settings)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("drill", choices=[*DRILLS, "all"])
    parser.add_argument("--log", choices=["embedded", "kafka"], help="log backend (default: the drill's)")
    parser.add_argument("--senders", type=int, help="concurrent senders (default: the drill's, 2 to 12)")
    parser.add_argument("--outage", type=float, default=0.0, help="seconds the broken part stays down")
    parser.add_argument(
        "--broker",
        choices=["cut", "kill"],
        default="cut",
        help="broker-outage: cut its connections (memory Tansu, default) or kill it (Tansu on S3)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON lines")
    parser.add_argument("--keep", type=Path, help="run in a new folder under KEEP and leave it there (logs)")
    args = parser.parse_args()
    configure_logging()  # the log lines of hubs run in this process go to stderr, the figures to stdout
    clean = True
    for name in DRILLS if args.drill == "all" else [args.drill]:
        for backend in [args.log] if args.log else DRILLS[name][1][: 1 if args.drill != "all" else None]:
            run = asyncio.run(run_one(name, backend, args))
            figures = run.figures
            print(figures.json() if args.json else figures.line(), flush=True)
            if not args.json:
                for key, value in figures.notes.items():
                    print(f"    {key}: {value}")
            clean = clean and not (figures.lost or figures.failed or figures.duplicated)
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
