"""A port another server holds is an error, never a port shared in silence: gRPC binds with
SO_REUSEPORT unless told not to, and two hubs (or two agents) on one port would each get some of
the connections, so half the calls would find nothing registered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub
from agenthub.sdk import Agent, HubClient, ScriptedModel
from agenthub.sdk.errors import ConfigError
from tests.test_cli import agenthub


async def test_a_hub_or_agent_on_a_port_in_use_refuses_to_start_and_the_first_keeps_serving(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    async with Hub(hub_settings(tmp_path / "first")) as first, HubClient(first.address) as client:
        taken = f"127.0.0.1:{first.grpc_port}"
        with pytest.raises(ConfigError) as refused:
            async with Hub(hub_settings(tmp_path / "second", port=first.grpc_port)):
                pass
        assert str(refused.value) == f"cannot listen on {taken} (port in use?)"

        code, out, err = await agenthub(
            "serve", "--port", str(first.grpc_port), "--data-dir", str(tmp_path / "cli"), timeout=120
        )
        assert (code, out) == (2, "") and err.strip().splitlines()[-1] == (
            f"error: cannot listen on {taken} (port in use?)"
        ), err
        assert "Traceback" not in err

        with pytest.raises(ConfigError) as refused:
            async with Agent("echo", model=ScriptedModel(), hub=None, port=first.grpc_port):
                pass
        assert str(refused.value) == f"cannot listen on {taken} (port in use?)"

        assert await client.list_agents() == []  # every call still reaches the first hub
