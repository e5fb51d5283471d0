"""The hub's secret key, and sealing of values the hub keeps in the log that hold credentials
(push configs: webhook tokens and Authorization credentials).

The key is `secret_key` from config (AGENTHUB_SECRET_KEY; every hub instance sharing a log needs
the same one), else a key generated once into `<data_dir>/secret.key` (mode 0600). Sealed values
are Fernet tokens (AES-128-CBC with HMAC-SHA256, from `cryptography`) behind a marker byte that no
protobuf message starts with, so records written before sealing existed still read as they are.
Never logs a key or a value it seals.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from cryptography.fernet import Fernet, InvalidToken

from agenthub.sdk.errors import ConfigError

if TYPE_CHECKING:
    from agenthub.hub.config import HubSettings

log = structlog.get_logger(__name__)

MARKER = b"\x00ahs1:"  # field number 0 is invalid in protobuf: no plain record starts like this
KEY_FILE = "secret.key"


class Unsealable(Exception):
    """A sealed value this hub cannot open (sealed with another key, or damaged)."""


class SecretBox:
    """Seals and opens values with the hub's key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise ConfigError(
                "secret_key must be a Fernet key (32 url-safe base64-encoded bytes): make one with"
                ' `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`'
            ) from None

    @classmethod
    def from_settings(cls, settings: HubSettings) -> SecretBox:
        """The box for `settings`: its `secret_key`, else the key in (or generated into) the data dir."""
        if settings.secret_key:
            return cls(settings.secret_key.encode())
        return cls(load_or_create_key(settings.data_dir / KEY_FILE))

    def seal(self, plain: bytes) -> bytes:
        return MARKER + self._fernet.encrypt(plain)

    def open(self, value: bytes) -> bytes:
        """The plain value of a sealed one; a value written before sealing is returned as it is."""
        if not is_sealed(value):
            return value
        try:
            return self._fernet.decrypt(value[len(MARKER) :])
        except InvalidToken:
            raise Unsealable("sealed with another secret key, or damaged") from None


def is_sealed(value: bytes) -> bool:
    return value.startswith(MARKER)


def load_or_create_key(path: Path) -> bytes:
    """The key stored at `path`, made there first (mode 0600) if there is none. Written whole to a
    temporary file and linked into place, so two processes on one data dir agree on one key."""
    if path.exists():
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(key + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return _read_key(path)
    finally:
        temporary.unlink(missing_ok=True)
    log.info("hub secret key generated", path=str(path))
    return key


def _read_key(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        log.warning("hub secret key file is readable by others: chmod 600 it", path=str(path))
    return path.read_bytes().strip()
