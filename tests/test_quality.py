"""Hand-written code stays ruff- and mypy-clean (generated code is excluded in pyproject.toml)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    formatted = run("ruff", "format", "--check", ".")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_mypy_is_clean() -> None:
    result = run("mypy", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_what_the_code_imports_at_load_time_is_a_dependency_not_an_extra() -> None:
    """`pip install -e '.[offline]'` then `agenthub up` (the README's two commands) must import:
    every third-party module the hub, the SDK or the agents import at module level comes from the
    project's own dependencies, not from the test extra the suite happens to have installed."""
    declared = {_distribution(spec) for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["dependencies"]}  # fmt: skip
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for path in [p for folder in ("hub", "sdk", "agents") for p in (ROOT / folder).rglob("*.py")]:
        for name in _module_level_imports(ast.parse(path.read_text())):
            if name in sys.stdlib_module_names or name == "agenthub":
                continue
            dists = {_distribution(d) for d in providers.get(name, [name])}
            if not dists & declared:
                missing[f"{path.relative_to(ROOT)}: {name}"] = sorted(dists)
    assert not missing, missing


def _distribution(spec: str) -> str:
    """A requirement's (or distribution's) normalized name: `a2a-sdk[grpc]>=1.3` -> `a2a-sdk`."""
    return re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _module_level_imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names
