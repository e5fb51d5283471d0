"""Reference agents, each runnable as its own process: `python -m agenthub.agents.<name>`."""
