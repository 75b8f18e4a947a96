"""A fast fake OpenAI upstream for the gateway benchmark: raw asyncio (uvloop) + httptools.

    python -m bench.gateway_upstream --port-file F [--chunk-gap-ms N]   (from the repo root)

Answers ``POST .../chat/completions`` on 127.0.0.1 over keep-alive HTTP/1.1, with no delay:

- not streamed: one fixed ``chat.completion`` (16 completion tokens, usage: 256 prompt tokens,
  the size of the benchmark's ~1 KB prompt), with a Content-Length;
- streamed (``"stream": true`` in the body): 16 content chunks, then a usage chunk when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``, chunked; each event is its
  own write, as a model streaming token by token sends it (``--chunk-gap-ms`` waits between
  them, 0 by default).

``GET /_bench/counts`` answers how many completions it served, by the caller's user agent
(``{"pilothouse/0.1.0": 123, ...}``), so the benchmark can tell what each gateway forwarded.
It writes the port it listens on to ``--port-file`` once it accepts connections. Nothing here
parses JSON on the hot path: the two flags are found with a regular expression over the body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import httptools

HOST = "127.0.0.1"
COMPLETION_TOKENS = 16
PROMPT_TOKENS = 256
MODEL = "bench-upstream"
STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
INCLUDE_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')
COMPLETIONS_SUFFIX = b"/chat/completions"
COUNTS_PATH = b"/_bench/counts"


def _words() -> list[str]:
    return [f"word{i} " for i in range(COMPLETION_TOKENS)]


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def completion_body() -> bytes:
    """The non-stream reply's JSON body."""
    body = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1767225600,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(_words()), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def stream_events(include_usage: bool) -> list[bytes]:
    """The SSE events of a streamed reply, ``[DONE]`` last."""
    base = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
    }
    events = []
    for i, word in enumerate(_words()):
        delta: dict[str, str] = {"content": word}
        if i == 0:
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        if i == COMPLETION_TOKENS - 1:
            choice["finish_reason"] = "stop"
        chunk = {**base, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        events.append(chunk)
    if include_usage:
        events.append({**base, "choices": [], "usage": _usage()})
    out = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n".encode() for e in events]
    return [*out, b"data: [DONE]\n\n"]


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_BODY = completion_body()
WHOLE_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (len(_BODY), _BODY)
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
# Each event as it goes on the wire; the last one carries the end of the chunked body.
STREAM_WRITES = {
    usage: [_chunked(e) for e in stream_events(usage)[:-1]]
    + [_chunked(stream_events(usage)[-1]) + b"0\r\n\r\n"]
    for usage in (False, True)
}
_SLOW: set[asyncio.Future[None]] = set()  # streams in flight with --chunk-gap-ms
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nnot found"
)


class Upstream(asyncio.Protocol):
    """One client connection: parse each request, answer it from the prepared bytes."""

    def __init__(self, counts: Counter[str], gap: float) -> None:
        self._counts = counts
        self._gap = gap
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._agent = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (uvloop's is not an asyncio.Transport subclass, hence the cast)."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the request parser; a broken request closes the connection."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        """Parser callback."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser callback: only the user agent is kept (for the counts)."""
        if len(name) == 10 and name.lower() == b"user-agent":
            self._agent = value

    def on_body(self, body: bytes) -> None:
        """Parser callback."""
        self._body.append(body)

    def on_message_complete(self) -> None:
        """Parser callback: a whole request is in; answer it."""
        transport = self._transport
        assert transport is not None
        url, body, agent = self._url, b"".join(self._body), self._agent
        self._url, self._body, self._agent = b"", [], b""
        keep_alive = self._parser.should_keep_alive()
        path = url.split(b"?", 1)[0]
        if path.endswith(COMPLETIONS_SUFFIX):
            self._counts[agent.decode("latin-1").split(" ", 1)[0] or "-"] += 1
            if STREAM_RE.search(body):
                writes = STREAM_WRITES[INCLUDE_USAGE_RE.search(body) is not None]
                if self._gap:
                    task = asyncio.ensure_future(self._stream_slowly(transport, writes, keep_alive))
                    _SLOW.add(task)
                    task.add_done_callback(_SLOW.discard)
                    return
                transport.write(STREAM_HEAD)
                for piece in writes:
                    transport.write(piece)
            else:
                transport.write(WHOLE_REPLY)
        elif path == COUNTS_PATH:
            data = json.dumps(dict(self._counts)).encode()
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            transport.write(head % len(data) + b"\r\n" + data)
        else:
            transport.write(NOT_FOUND)
        if not keep_alive:
            transport.close()

    async def _stream_slowly(
        self, transport: asyncio.Transport, writes: list[bytes], keep_alive: bool
    ) -> None:
        transport.write(STREAM_HEAD)
        for piece in writes:
            await asyncio.sleep(self._gap)
            if transport.is_closing():
                return
            transport.write(piece)
        if not keep_alive:
            transport.close()


async def serve(port_file: Path, gap: float) -> None:
    """Listen on a free loopback port until SIGTERM or SIGINT."""
    counts: Counter[str] = Counter()
    await serve_until_signalled(lambda: Upstream(counts, gap), port_file)


async def serve_until_signalled(factory: Callable[[], asyncio.Protocol], port_file: Path) -> None:
    """Serve ``factory``'s protocol on a free loopback port, written atomically to ``port_file``,
    until SIGTERM or SIGINT (shared with the bare forwarder)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, HOST, 0, backlog=1024, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(port_file)
    await stop.wait()
    server.close()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--chunk-gap-ms", type=float, default=0.0)
    args = parser.parse_args()
    run_on_fastest_loop(serve(args.port_file, args.chunk_gap_ms / 1000))


def run_on_fastest_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    main()
