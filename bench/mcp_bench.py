"""MCP ``tools/call`` latency through Pilothouse's ``/mcp`` against the same upstream called
directly, side by side in one run.

    .venv/bin/python bench/mcp_bench.py [--seconds 8] [--warmup 2] [--concurrency 1 16]
                                        [--rounds 3]

The upstream is a streamable-HTTP MCP server built with the official SDK (stateless, JSON
answers) whose one tool adds two numbers, in its own process. Pilothouse (uvicorn, SQLite) is
pinned to CPU 0 with the upstream registered as an ``http`` MCP server; this script's
closed-loop generator (asyncio + httptools) is pinned to CPU 1; the upstream is not pinned. Each
cell is a warm-up, then ``--seconds`` of closed loop sending the same JSON-RPC ``tools/call``:

- **direct**: to the upstream's ``/mcp``;
- **through Pilothouse**: to ``/mcp`` with a session key, which authenticates, lists (its cached
  tool list), checks the policy (the check recorded and audited), calls the upstream (a plain
  POST on the gateway's connection pool, as the SDK's session negotiated it), redacts, scans
  the result and audits the call.

The report gives p50 and p99 of each, and the p50 added (through minus direct) at each
concurrency, per round (the two targets' order flips each round) and its median. In a
closed loop, p50 at concurrency C is about C divided by the calls per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.check_bench import session_key
from bench.server_bench import (
    REPO,
    SERVERS,
    PythonLoad,
    ServerRun,
    Target,
    free_port,
    http_get,
)

CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "add", "arguments": {"a": 2, "b": 3}},
}
MCP_HEADERS = (
    ("Accept", "application/json, text/event-stream"),
    ("MCP-Protocol-Version", "2025-11-25"),
)


def serve_upstream(port: int) -> None:
    """Run the upstream MCP server on ``port`` until killed."""
    import mcp_types as types
    import uvicorn
    from mcp.server.lowlevel.server import Server

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        schema = {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        }
        return types.ListToolsResult(
            tools=[types.Tool(name="add", description="Adds two numbers.", input_schema=schema)]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        total = int(arguments.get("a", 0)) + int(arguments.get("b", 0))
        return types.CallToolResult(content=[types.TextContent(text=str(total))])

    server: Server[Any] = Server("bench-upstream", on_list_tools=list_tools, on_call_tool=call_tool)
    app = server.streamable_http_app(stateless_http=True, json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Upstream:
    """The upstream in its own process, for the run."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Upstream:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_upstream", str(self.port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status, _ = http_get(self.port, "/mcp")
            except OSError:
                time.sleep(0.1)
                continue
            if status:
                return self
        raise RuntimeError("the upstream did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_upstream"]:
        serve_upstream(int(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--rounds", type=int, default=3, help="measure every pair this often; medians reported"
    )
    opts = parser.parse_args(argv)
    print(f"# MCP tools/call latency ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs)\n")
    print("| round | target | c | calls/s | p50 ms | p99 ms | errors |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    added: dict[int, list[float]] = {c: [] for c in opts.concurrency}
    with Upstream() as upstream:
        servers = [
            {"name": "bench", "transport": "http", "url": f"http://127.0.0.1:{upstream.port}/mcp"}
        ]
        env = {"PILOTHOUSE_MCP_SERVERS": json.dumps(servers)}
        with ServerRun(SERVERS["uvicorn"], 0, env) as run:
            key = session_key(run.port)
            direct = Target("direct", "/mcp", MCP_HEADERS, 200, "", "POST", json.dumps(CALL))
            through_call = {**CALL, "params": {**CALL["params"], "name": "bench__add"}}
            through = Target(
                "through Pilothouse",
                "/mcp",
                (*MCP_HEADERS, ("Authorization", f"Bearer {key}")),
                200,
                "",
                "POST",
                json.dumps(through_call),
            )
            load = PythonLoad()
            pairs = [(direct, upstream.port), (through, run.port)]
            for round_ in range(1, opts.rounds + 1):
                for c in opts.concurrency:
                    p50s = {}
                    for target, port in pairs if round_ % 2 else pairs[::-1]:
                        load.run(port, target, c, max(1, round(opts.warmup)), 1)
                        result = load.run(port, target, c, round(opts.seconds), 1)
                        rate = result.requests / result.seconds
                        errors = result.errors + result.wrong_status
                        p50s[target.name] = result.p50_ms
                        print(
                            f"| {round_} | {target.name} | {c} | {rate:,.0f}"
                            f" | {result.p50_ms:.2f} | {result.p99_ms:.2f} | {errors} |"
                        )
                    added[c].append(p50s["through Pilothouse"] - p50s["direct"])
    print()
    for c, each in added.items():
        shown = ", ".join(f"{ms:+.2f}" for ms in each)
        print(f"added p50 at c={c}: median {statistics.median(each):+.2f} ms ({shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
