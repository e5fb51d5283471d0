"""Shared fixtures: real hubs on temporary data dirs, real agents on loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub


def hub_settings(data_dir: Path, **overrides: object) -> HubSettings:
    """Settings for a test hub: any free ports, fast retries, no background health checks."""
    values: dict[str, object] = {
        "port": 0, "http_port": 0, "data_dir": data_dir, "retry_backoff_s": 0.05,
        "health_interval_s": 0, "instance_id": "test",
    }
    values.update(overrides)
    return HubSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with Hub(hub_settings(tmp_path / "hub")) as running:
        yield running
