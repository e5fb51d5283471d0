"""How a request reaches its agent: registry, dispatcher, connections, retries, replies."""
