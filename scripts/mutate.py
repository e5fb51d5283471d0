"""Mutation testing of the hub's core modules with cosmic-ray: break the code on purpose, run the
fast tests, and print every mutant the tests did not notice (a survivor).

    python scripts/mutate.py cards                       # one small module, its default tests
    python scripts/mutate.py front --match _owned_task   # only mutants inside one function
    python scripts/mutate.py dispatcher --max 20         # an evenly spread sample of 20 mutants
    python scripts/mutate.py front --line 185            # the mutants of one line (a survivor, again)
    python scripts/mutate.py front --edit "tenant and " "False and "   # a hand-made mutant
    python scripts/mutate.py registry --tests tests/test_cards.py

The checkout is never touched: the committed tree (HEAD, or `--working-tree` for the files as they
are) is copied to a scratch folder, `agenthub` is imported from that copy (checked before any
mutant is made), and cosmic-ray mutates the copy in place, one mutant per test run. The tests are
the embedded-log, SQLite-store variants, and the tests of neither (pure units), stopping at the
first failure (`-x`); a run that times out counts as killed. The exit code is 0 when no mutant
survived, 1 otherwise, 2 when the unmutated tests already fail.
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The core modules (hub/...), and the test files that exercise each one quickly.
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "front": (["hub/heads/front.py"], ["test_isolation.py", "test_bindings.py", "test_failures.py",
                                 "test_subscribe.py", "test_promises_routing.py", "test_trust.py",
                                 "test_mutants_front.py", "test_mutants_trust.py"]),
    "dispatcher": (["hub/routing/dispatcher.py"], ["test_promises_routing.py", "test_delivery.py",
                                           "test_failures.py", "test_mutants_dispatcher.py"]),
    "recorder": (["hub/recording/recorder.py"],
                 ["test_projection.py", "test_mutants_recorder.py", "test_delivery.py", "test_operators.py",
                  "test_a2a_e2e.py"]),
    "projection": (["hub/recording/projection.py"],
                   ["test_projection.py", "test_mutants_projection.py", "test_operators.py",
                    "test_a2a_e2e.py"]),
    "log": (["hub/log/_base.py", "hub/log/embedded.py"], ["test_delivery.py", "test_operators.py"]),
    "registry": (["hub/routing/registry.py"],
                 ["test_cards.py", "test_register_url.py", "test_replicas.py", "test_promises_routing.py"]),
    "push": (["hub/push/notifier.py", "hub/log/table.py"],
             ["test_push.py", "test_webhooks.py", "test_mutants_push.py"]),
    "cards": (["hub/heads/cards.py"], ["test_cards.py", "test_bindings.py"]),
    "connections": (["hub/routing/connections.py"],
                    ["test_connections.py", "test_bindings.py", "test_failures.py", "test_tls.py",
                     "test_mutants_dispatcher.py", "test_watch_agents.py", "test_register_url.py"]),
    "store": (["hub/threads/_sql.py"],
              ["test_projection.py", "test_mutants_recorder.py", "test_threads_whole.py"]),
}  # fmt: skip
PACKAGES = {"hub": "hub", "sdk": "sdk", "agents": "agents"}  # agenthub.<name> <- folder


def main() -> int:
    args = parse_args()
    modules = [path for name in args.modules for path in MODULES[name][0]]
    tests = args.tests or sorted({f"tests/{t}" for name in args.modules for t in MODULES[name][1]})
    scratch = Path(tempfile.mkdtemp(prefix="agenthub-mutants-"))
    try:
        copy_tree(scratch, working_tree=args.working_tree)
        os.environ.update(import_env(scratch))
        check_imports_from(scratch)
        os.chdir(scratch)
        command = test_command(tests, args.backend, args.select)
        print(f"tests: {command}", flush=True)
        started = time.monotonic()
        if subprocess.run(shlex.split(command), capture_output=True).returncode != 0:
            print("the unmutated tests fail: fix them first (run the command above in the checkout)")
            return 2
        timeout = args.timeout or 3 * (time.monotonic() - started) + 30
        if args.edit:
            survivors = run_edit(modules, command, timeout, *args.edit)
        else:
            survivors = run_mutants(modules, command, timeout, args)
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 1 if survivors else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="+", choices=sorted(MODULES), help="core modules to mutate")
    parser.add_argument("--tests", nargs="+", help="test files to run instead of the modules' defaults")
    parser.add_argument("--match", help="only mutants inside functions whose name matches this regex")
    parser.add_argument("--line", type=int, nargs="+", help="only mutants starting on these lines")
    parser.add_argument("--operator", help="only mutants whose cosmic-ray operator matches this regex")
    parser.add_argument(
        "--edit",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="test one hand-made mutant instead: OLD (found once in the modules) made NEW",
    )
    parser.add_argument("--max", type=int, help="at most this many mutants, spread evenly over the modules")
    parser.add_argument("--timeout", type=float, help="seconds per test run [default: 3x the clean run + 30]")
    parser.add_argument("--select", help="a pytest -k expression narrowing the tests further")
    parser.add_argument("--backend", default="embedded", choices=["embedded", "kafka"], help="log backend")
    parser.add_argument("--working-tree", action="store_true", help="mutate the files as they are, not HEAD")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy afterwards")
    return parser.parse_args()


def copy_tree(scratch: Path, *, working_tree: bool) -> None:
    """The project's files in `scratch`: HEAD's tree, or the tracked and new files as they are."""
    if not working_tree:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
        return
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, scratch / name)


# Loaded first by every Python process of the run: takes the editable install's finder away, so a
# module missing from the copy fails to import instead of coming from the checkout.
NO_EDITABLE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
"""


def import_env(scratch: Path) -> dict[str, str]:
    """Environment that imports `agenthub.*` from the scratch copy, and only from there."""
    shim = scratch / "_import" / "agenthub"
    shim.mkdir(parents=True)
    (shim.parent / "sitecustomize.py").write_text(NO_EDITABLE)
    for name, folder in PACKAGES.items():
        (shim / name).symlink_to(scratch / folder, target_is_directory=True)
    path = [str(scratch / "_import"), str(scratch), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(filter(None, path)), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports_from(scratch: Path) -> None:
    """Refuse to go on unless every agenthub package is imported from the scratch copy."""
    probe = (
        "import agenthub.hub, agenthub.sdk, agenthub.agents as a; print(a.__file__, agenthub.hub.__file__)"
    )
    found = subprocess.run([sys.executable, "-c", probe], cwd=scratch, capture_output=True, text=True)
    paths = found.stdout.split()
    if found.returncode != 0 or not paths or not all(p.startswith(str(scratch)) for p in paths):
        sys.exit(f"agenthub is not imported from the scratch copy ({found.stdout or found.stderr}); stopping")


def test_command(tests: list[str], backend: str, select: str | None) -> str:
    """pytest on the chosen log backend and the SQLite store; tests of neither (pure units) run too."""
    other = "kafka" if backend == "embedded" else "embedded"
    selected = f"not {other} and not postgres" + (f" and ({select})" if select else "")
    pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not model"]
    return shlex.join([*pytest, "-k", selected, *tests])


def run_edit(modules: list[str], command: str, timeout: float, old: str, new: str) -> int:
    """Test one hand-made mutant (a mutant cosmic-ray does not make, such as a check removed);
    1 if it survived."""
    found = {m: Path(m).read_text().count(old) for m in modules}
    if sum(found.values()) != 1:
        sys.exit(f"{old!r} must occur exactly once in {', '.join(modules)} (found {found}); stopping")
    path = Path(next(m for m, n in found.items() if n))
    path.write_text(path.read_text().replace(old, new))
    try:
        run = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=timeout)
        survived, by = run.returncode == 0, failed_test(run.stdout) or "a crash"
    except subprocess.TimeoutExpired:
        survived, by = False, "a timeout"
    print(f"{'SURVIVED' if survived else 'killed by ' + by} {path}\n    - {old}\n    + {new}", flush=True)
    return int(survived)


def run_mutants(modules: list[str], command: str, timeout: float, args: argparse.Namespace) -> int:
    """Make and test the mutants one by one in the scratch copy; print survivors; how many survived."""
    from cosmic_ray.commands import init
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    with use_db("session.sqlite", WorkDB.Mode.create) as db:
        init([Path(m) for m in modules], db, {})
        items = sorted(db.pending_work_items, key=_position)
    items = [w for w in items if not in_annotation(w.mutations[0])]
    if args.match:
        items = [w for w in items if re.search(args.match, w.mutations[0].definition_name or "")]
    if args.line:
        items = [w for w in items if w.mutations[0].start_pos[0] in args.line]
    if args.operator:
        items = [w for w in items if re.search(args.operator, w.mutations[0].operator_name)]
    if args.max is not None and len(items) > args.max:
        step = len(items) / args.max
        items = [items[int(i * step)] for i in range(args.max)]
    print(f"{len(items)} mutants of {', '.join(modules)}; {timeout:.0f}s per test run", flush=True)
    counts = {"killed": 0, "survived": 0, "incompetent": 0, "not run": 0}
    for number, item in enumerate(items, 1):
        mutation = item.mutations[0]
        where = f"{mutation.module_path}:{mutation.start_pos[0]} {mutation.operator_name}"
        where += f" in {mutation.definition_name}"
        result = mutate_and_test(item.mutations, command, timeout)
        if result.worker_outcome != WorkerOutcome.NORMAL:
            counts["not run"] += 1
            continue
        if result.test_outcome == TestOutcome.SURVIVED:
            counts["survived"] += 1
            print(f"[{number}/{len(items)}] SURVIVED {where}\n{indent(result.diff or '')}", flush=True)
        elif result.test_outcome == TestOutcome.KILLED:
            counts["killed"] += 1
            by = failed_test(result.output or "") or "a timeout or a crash"
            print(f"[{number}/{len(items)}] killed   {where} (by {by})", flush=True)
        else:
            counts["incompetent"] += 1
    print("summary: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return counts["survived"]


def in_annotation(mutation: Any) -> bool:
    """Whether a mutant changes only a type annotation: the core modules use `from __future__ import
    annotations`, so annotations are never evaluated and such a mutant is equivalent by construction."""
    where = (mutation.start_pos[0], mutation.start_pos[1])
    return any(start <= where < end for start, end in _annotations(str(mutation.module_path)))


@functools.cache
def _annotations(path: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of every annotation in a module, as (line, column)."""
    tree = ast.parse(Path(path).read_text())
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    if not any(alias.name == "annotations" for n in future for alias in n.names):
        return []  # annotations are evaluated here: a mutant in one may change behaviour
    spans = []
    for node in ast.walk(tree):
        for note in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if isinstance(note, ast.expr) and note.end_lineno is not None and note.end_col_offset is not None:
                spans.append(((note.lineno, note.col_offset), (note.end_lineno, note.end_col_offset)))
    return spans


def _position(item: Any) -> tuple[str, tuple[int, int], str, int]:
    """Mutants in file order, so a --max sample spreads evenly over the code."""
    m = item.mutations[0]
    return str(m.module_path), m.start_pos, m.operator_name, m.occurrence


def failed_test(output: str) -> str:
    """The first test pytest's summary lists as failed (or erroring), "" if none is named."""
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found.group(1) if found else ""


def indent(diff: str) -> str:
    lines = [
        line for line in diff.splitlines() if line.startswith(("+", "-")) and line[:3] not in ("+++", "---")
    ]
    return "\n".join(f"    {line}" for line in lines)


if __name__ == "__main__":
    sys.exit(main())
