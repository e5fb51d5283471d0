"""API keys: made by an admin, shown once, kept only as a hash in the compacted `<prefix>.keys` topic
so every hub instance accepts and revokes the same keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agenthub.hub.log._base import Lifecycle, Log
from agenthub.hub.log.table import CompactedTable
from agenthub.hub.loops import Readiness
from agenthub.hub.trust.principal import Principal, Role
from agenthub.sdk.errors import InvalidRequest, Unauthenticated

PREFIX = "ahk_"
_TOKEN = re.compile(r"^ahk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")


@dataclass(frozen=True)
class ApiKey:
    """A key as the hub keeps it: never its secret, only the secret's SHA-256."""

    id: str
    name: str
    role: str
    agent: str
    hash: str
    created_at: float
    created_by: str = ""
    revoked: bool = False

    def principal(self) -> Principal:
        return Principal(self.name, Role(self.role), self.agent, method="key")


def _decode(value: bytes) -> ApiKey:
    try:
        return ApiKey(**json.loads(value))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(str(exc)) from exc


def _encode(key: ApiKey) -> bytes:
    return json.dumps(asdict(key), sort_keys=True).encode()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore(Lifecycle):
    """Every API key, followed from the log."""

    def __init__(self, log: Log, topic: str, *, readiness: Readiness | None = None):
        self._table: CompactedTable[ApiKey] = CompactedTable(
            log, topic, decode=_decode, encode=_encode, name="keys", readiness=readiness
        )

    async def start(self) -> None:
        await self._table.start()

    async def stop(self) -> None:
        await self._table.stop()

    def list(self) -> list[ApiKey]:
        return sorted(self._table.rows.values(), key=lambda k: (k.created_at, k.id))

    async def create(self, name: str, role: str, agent: str = "", created_by: str = "") -> tuple[ApiKey, str]:
        """A new key and its bearer token (the only time the token exists outside the caller)."""
        if not _NAME.match(name):
            raise InvalidRequest(f"invalid key name {name!r}: letters, digits and _.@- (up to 63)")
        if role not in {r.value for r in Role}:
            raise InvalidRequest(f"unknown role {role!r}: use one of {', '.join(r.value for r in Role)}")
        if (role == Role.AGENT) != bool(agent):
            raise InvalidRequest("an agent key names its agent (--agent NAME); other roles name none")
        if any(k.name == name and not k.revoked for k in self._table.rows.values()):
            raise InvalidRequest(f"a key named {name!r} exists; revoke it first or pick another name")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = ApiKey(key_id, name, role, agent, _digest(secret), time.time(), created_by)
        await self._table.put(key_id, key)
        return key, f"{PREFIX}{key_id}_{secret}"

    async def revoke(self, id_or_name: str) -> ApiKey:
        """Revoke a key by id or by the name of its live key; every instance refuses it from then on."""
        key = self._table.rows.get(id_or_name) or next(
            (k for k in self._table.rows.values() if k.name == id_or_name and not k.revoked), None
        )
        if key is None:
            raise InvalidRequest(f"no key {id_or_name!r} (see `agenthub keys list`)")
        revoked = ApiKey(**{**asdict(key), "revoked": True})
        await self._table.put(key.id, revoked)
        return revoked

    def verify(self, token: str) -> Principal:
        """The principal of a bearer token; Unauthenticated for a malformed, unknown or revoked one."""
        match = _TOKEN.match(token)
        key = self._table.rows.get(match.group(1)) if match else None
        if match is None or key is None or not hmac.compare_digest(key.hash, _digest(match.group(2))):
            raise Unauthenticated("invalid API key")
        if key.revoked:
            raise Unauthenticated("this API key has been revoked")
        return key.principal()

    async def bootstrap_admin(self, path: Path) -> bool:
        """Make sure `path` holds a live admin key (a new one when it holds none): the zero-setup
        credential that the CLI and the reference agents on this machine pick up. True if made."""
        kept = await asyncio.to_thread(read_key_file, path)
        try:
            if kept and self.verify(kept).role is Role.ADMIN:
                return False
        except Unauthenticated:
            pass  # revoked, or made for another log: replaced below
        taken = any(k.name == "admin" and not k.revoked for k in self._table.rows.values())
        name = f"admin-{secrets.token_hex(3)}" if taken else "admin"
        _, token = await self.create(name, Role.ADMIN, created_by="hub")
        await asyncio.to_thread(write_key_file, path, token)
        return True


def read_key_file(path: Path) -> str:
    """The key kept in a file ('' when there is none)."""
    return path.read_text().strip() if path.exists() else ""


def write_key_file(path: Path, token: str) -> None:
    """Keep a key in a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
