"""A small MCP server for the tests, run as its own process over stdio or streamable HTTP.

`python -m tests.mcp_server stdio` or `python -m tests.mcp_server http PORT`. Its tools: `reverse`
(the proof a call went through), `pid` (so a test can kill the server it reaches), and `refuse`
(a tool that reports an error the MCP way).
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("test-tools", log_level="WARNING")


@server.tool()
def reverse(text: str) -> str:
    """Reverse the text."""
    return text[::-1]


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def refuse(text: str) -> str:
    """Always fails, saying why."""
    raise ToolError(f"refused: {text}")


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
