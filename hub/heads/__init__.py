"""How a request comes in: the A2A handler, its gRPC and HTTP heads, the hub's own services."""
