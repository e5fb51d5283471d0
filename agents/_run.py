"""Command-line entry shared by the reference agents: `python -m agenthub.agents.<name> [--hub] [--port]`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from agenthub.sdk import Agent
from agenthub.sdk.logs import configure_logging


def run(build: Callable[..., Agent], description: str) -> None:
    """Parse the standard flags, build the agent and serve it until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--hub",
        default=os.environ.get("AGENTHUB_HUB", "127.0.0.1:50051"),
        help="hub gRPC address (env AGENTHUB_HUB; default 127.0.0.1:50051)",
    )
    parser.add_argument("--port", type=int, default=0, help="port for this agent's A2A gRPC server (0 = any)")
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines")
    args = parser.parse_args()
    configure_logging(json=args.json_logs)
    build(hub=args.hub, port=args.port).run()
