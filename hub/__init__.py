"""The AgentHub server: gRPC front, routing through the log, recorder, registry, CLI."""
