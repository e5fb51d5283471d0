"""`python -m agenthub.hub.cli`: the same as the `agenthub` command."""

from agenthub.hub.cli.app import main

main()
