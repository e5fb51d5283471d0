"""A long fuzzing run against a fresh hub: many more cases than the suite's, then a summary.

    python scripts/fuzz.py [--examples 5000] [--seed N] [--show 5] [--threads-url postgresql://...]

Runs the strategies of tests/fuzzing.py (garbled protobuf and raw bytes on every gRPC method of
the hub, random JSON-RPC and HTTP+JSON requests) against a hub in a temporary directory (embedded
log; SQLite store, or the PostgreSQL database --threads-url names), without stopping at the first
fault: it prints how many cases each head got, the answers they got (status counts), the faults
by kind with a few examples each, and whether the hub still answered a plain question on every
binding afterwards. Exit status 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import fuzzing
from tests.fuzzing import Answer


def run(
    name: str,
    strategy: st.SearchStrategy[Any],
    send: Callable[[Any], Answer],
    examples: int,
    random_seed: int,
) -> list[Answer]:
    """Every answer to `examples` cases drawn from `strategy` (generation only: no shrinking)."""
    answers: list[Answer] = []

    @seed(random_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        answers.append(send(case))

    start = time.monotonic()
    fuzz()
    print(f"{name}: {len(answers)} cases in {fuzzing.elapsed(start)}", flush=True)
    return answers


def summary(answers: list[Answer], show: int) -> int:
    """Print statuses per head and faults by kind; the number of faulty answers."""
    by_head: dict[str, Counter[str]] = defaultdict(Counter)
    faults: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_head[answer.head][answer.status] += 1
        for kind in fuzzing.faults(answer):
            faults[kind].append(answer)
    print(f"\n{len(answers)} cases")
    for head, statuses in sorted(by_head.items()):
        common = ", ".join(f"{status}: {count}" for status, count in statuses.most_common(8))
        print(f"  {head:<11} {sum(statuses.values()):>6}  {common}")
    faulty = {id(a) for found in faults.values() for a in found}
    print(f"\nfaults: {len(faulty)}" + ("" if faults else " (none)"))
    for kind, found in sorted(faults.items()):
        print(f"  {kind}: {len(found)}")
        for answer in found[:show]:
            print(f"    {answer.head} {answer.method} -> {answer.status}: {answer.text[:160]!r}")
    return len(faulty)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="cases per head (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--show", type=int, default=5, help="examples printed per kind of fault")
    parser.add_argument("--threads-url", help="thread store URL (default: SQLite in a temporary dir)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as workdir,
        fuzzing.BackgroundHub(Path(workdir) / "hub", args.threads_url) as hub,
    ):
        with fuzzing.clients(hub) as (channel, http):
            heads: list[tuple[str, st.SearchStrategy[Any], Callable[[Any], Answer]]] = [
                ("gRPC", fuzzing.grpc_cases(), lambda c: fuzzing.grpc_call(channel, c)),
                ("JSON-RPC", fuzzing.jsonrpc_cases(), lambda c: fuzzing.http_call(http, c, "jsonrpc")),
                ("HTTP+JSON", fuzzing.rest_cases(), lambda c: fuzzing.http_call(http, c, "rest")),
            ]
            answers = [a for head in heads for a in run(*head, args.examples, args.seed)]
        faulty = summary(answers, args.show)
        afterwards = fuzzing.serves_normally(hub)
        lost = fuzzing.parked(hub)
        print(f"\nafterwards, a plain question on every binding: {afterwards}")
        print(f"records the hub could not record in its threads (parked): {lost}")
    healthy = set(afterwards.values()) == {"TASK_STATE_COMPLETED"}
    return 0 if faulty == 0 and healthy and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
