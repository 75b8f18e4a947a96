"""MCP servers the upstream tests connect to, built with the SDK's own ``MCPServer``.

``python -m tests.mcp.servers <mode>`` (from the repository root) serves over stdio:

- ``echo``: ``echo(text)``, ``env(name)`` (a variable of its environment), ``meet(text, count)``
  (answers once ``count`` calls are in flight at the same time), ``spawn()`` (starts a child
  process that sleeps, and returns its pid);
- ``crash``: the same, and ``crash()``, which exits the process at once;
- ``hang``: the same, and ``hang()``, which never answers;
- ``garbage``: the same, and ``garble()``, which writes a line that is not JSON-RPC where the
  answers go, and then never answers.

:func:`http_server` serves ``whoami()`` (the headers of the request) and ``echo(text)`` over
streamable HTTP or the legacy SSE transport on a free loopback port, with bounded waits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

MODES = ("echo", "crash", "hang", "garbage")
START_SECONDS = 15.0
STOP_SECONDS = 10.0
MEET_SECONDS = 10.0


def build_stdio_server(mode: str, wire: int) -> MCPServer:
    """The test server for ``mode``; ``wire`` is a descriptor on the pipe its answers go to."""
    server: MCPServer = MCPServer(f"pilothouse-test-{mode}", log_level="WARNING")
    meeting: dict[str, Any] = {"count": 0, "met": None}
    children: list[subprocess.Popen[bytes]] = []

    @server.tool()
    def echo(text: str) -> str:
        """Answer the text."""
        return text

    @server.prompt()
    def review(code: str) -> str:
        """Ask for a review of some code."""
        return f"Please review this code: {code}"

    @server.resource("notes://today", name="today", mime_type="text/plain")
    def today() -> str:
        """Today's note, which quotes the credential this process was given."""
        return f"Today's note. token={os.environ.get('UPSTREAM_TOKEN', '')}"

    @server.tool()
    def env(name: str) -> str:
        """The value of an environment variable of this process ('' when unset)."""
        return os.environ.get(name, "")

    @server.tool()
    async def meet(text: str, count: int) -> str:
        """Answer the text once ``count`` calls of this tool are in flight together."""
        if meeting["met"] is None:
            meeting["met"] = anyio.Event()
        meeting["count"] += 1
        if meeting["count"] >= count:
            meeting["met"].set()
        with anyio.fail_after(MEET_SECONDS):
            await meeting["met"].wait()
        return text

    @server.tool()
    def spawn() -> int:
        """Start a child process that sleeps for a minute; its pid."""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        children.append(child)
        return child.pid

    if mode == "crash":

        @server.tool()
        def crash() -> str:
            """Exit the process at once."""
            print("crash mode: exiting on purpose", file=sys.stderr, flush=True)
            os._exit(3)

    if mode == "hang":

        @server.tool()
        async def hang() -> str:
            """Never answer."""
            await anyio.sleep_forever()
            return "unreachable"

    if mode == "garbage":

        @server.tool()
        async def garble() -> str:
            """Write a line that is not JSON-RPC where answers go, then never answer."""
            os.write(wire, b"this line is not JSON-RPC\n")
            await anyio.sleep_forever()
            return "unreachable"

    return server


def main(argv: list[str]) -> None:
    """Serve the mode named on the command line over stdio."""
    if len(argv) != 1 or argv[0] not in MODES:
        sys.exit(f"usage: python -m tests.mcp.servers {{{'|'.join(MODES)}}}")
    # The SDK points descriptor 1 at stderr while it serves; keep one on the real pipe.
    wire = os.dup(1)
    print(f"test server {argv[0]} starting", file=sys.stderr, flush=True)
    build_stdio_server(argv[0], wire).run("stdio")


def build_http_server() -> MCPServer:
    """An MCP server with ``whoami()`` (the request's headers), ``echo(text)`` and
    ``größe(text)``."""
    server: MCPServer = MCPServer("pilothouse-test-http", log_level="WARNING")

    @server.tool()
    def whoami(ctx: Context) -> dict[str, str]:
        """The headers of the HTTP request that carried this call."""
        return dict(ctx.headers or {})

    @server.tool()
    def echo(text: str) -> str:
        """Answer the text."""
        return text

    @server.tool(name="größe")
    def size(text: str) -> int:
        """How many characters the text has (a name no HTTP header can carry as it is)."""
        return len(text)

    return server


@contextmanager
def http_server(
    transport: str, port: int = 0, wrap: Callable[[Any], Any] | None = None
) -> Iterator[str]:
    """Serve :func:`build_http_server` on loopback (a free port unless ``port`` is given) until
    the block ends: the endpoint's URL. ``wrap`` wraps its ASGI app."""
    server = build_http_server()
    app: Any = server.streamable_http_app() if transport == "http" else server.sse_app()
    if wrap is not None:
        app = wrap(app)
    path = "/mcp" if transport == "http" else "/sse"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # to serve a port again
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    config = uvicorn.Config(
        app,
        lifespan="on",
        loop="asyncio",
        http="h11",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, name="mcp-test-http")
    thread.start()
    try:
        deadline = time.monotonic() + START_SECONDS
        while not runner.started:
            assert thread.is_alive(), "the test MCP server stopped during start-up"
            assert time.monotonic() < deadline, "the test MCP server did not start in time"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{path}"
    finally:
        runner.should_exit = True
        thread.join(STOP_SECONDS)
        sock.close()
        assert not thread.is_alive(), "the test MCP server did not stop in time"


if __name__ == "__main__":
    main(sys.argv[1:])
