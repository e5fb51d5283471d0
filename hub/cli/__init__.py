"""The `agenthub` command line."""

from agenthub.hub.cli.app import main

__all__ = ["main"]
