"""Where a gateway's CPU goes per call: py-spy's sampled stacks, summed by function and by layer.

py-spy (``record --format raw``) writes one line per distinct stack, root first, frames as
``function (path:line)`` joined by ``;``, then the number of samples. Idle samples (a thread
waiting in epoll or on a lock) are left out by py-spy, so the samples are the process's busy
time. A function's *own* time is the samples where it is the innermost Python frame, which
includes the C code it calls (orjson, sqlite3, uvloop's socket writes...); *inclusive* time is
the samples where it is anywhere on the stack. Shares are turned into microseconds per call
with the CPU time per call measured from /proc over the same run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")

# (path fragment, layer), first match wins; checked against the innermost frame's file.
LAYERS: tuple[tuple[str, str], ...] = (
    ("pilothouse/gateway/", "pilothouse: gateway pipeline"),
    ("pilothouse/identity/", "pilothouse: authentication"),
    ("pilothouse/audit/", "pilothouse: audit"),
    ("pilothouse/store/", "pilothouse: store"),
    ("pilothouse/telemetry", "pilothouse: telemetry"),
    ("pilothouse/", "pilothouse: other"),
    ("uvicorn/", "uvicorn (HTTP server)"),
    ("starlette/", "starlette/fastapi (routing)"),
    ("fastapi/", "starlette/fastapi (routing)"),
    ("aiohttp/", "aiohttp (upstream client)"),
    ("yarl/", "aiohttp (upstream client)"),
    ("multidict/", "aiohttp (upstream client)"),
    ("aiosqlite/", "SQLite (aiosqlite thread, sqlite3)"),
    ("sqlite3/", "SQLite (aiosqlite thread, sqlite3)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("asyncpg/", "asyncpg"),
    ("opentelemetry/", "telemetry libraries"),
    ("prometheus_client/", "telemetry libraries"),
    ("pydantic", "pydantic"),
    ("ulid/", "ids (python-ulid)"),
    ("json/", "json (stdlib)"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio / uvloop (event loop, sockets)"),
    ("uvloop/", "asyncio / uvloop (event loop, sockets)"),
    ("threading.py", "threads (aiosqlite's worker waiting/handing off)"),
    ("queue.py", "threads (aiosqlite's worker waiting/handing off)"),
)


# Frames under which everything runs: their inclusive share says nothing.
ENTRY_POINTS = ("pilothouse/__main__.py", "pilothouse/cli/main.py", "pilothouse/cli/serve.py")


@dataclass(frozen=True)
class Frame:
    """One stack frame, without its line number."""

    func: str
    path: str

    @property
    def label(self) -> str:
        """``function (short/path.py)``."""
        return f"{self.func} ({short_path(self.path)})"


def short_path(path: str) -> str:
    """A path from the package down (``site-packages/`` and ``src/`` prefixes dropped)."""
    for marker in ("site-packages/", "/src/", "lib/python3."):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "lib/python3." and "/" in rest else rest
    return path


def layer_of(frame: Frame) -> str:
    """The layer a frame's file belongs to."""
    path = short_path(frame.path)
    for fragment, layer in LAYERS:
        if fragment in path:
            return layer
    return "other: " + (path.split("/", 1)[0] or "?")


def parse_frame(text: str) -> Frame:
    """``func (path:line)`` -> Frame."""
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "")
    return Frame(match["func"], match["path"])


@dataclass
class Profile:
    """Samples by function (own and inclusive) and by layer."""

    samples: int = 0
    own: Counter[Frame] = field(default_factory=Counter)
    callers: dict[Frame, Counter[Frame]] = field(default_factory=dict)
    inclusive: Counter[Frame] = field(default_factory=Counter)
    layers: Counter[str] = field(default_factory=Counter)


def summarise(lines: Iterable[str]) -> Profile:
    """Sum py-spy's raw (collapsed) stacks."""
    profile = Profile()
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.func.startswith(("process ", "thread "))]
        if not frames:
            continue
        profile.samples += count
        leaf = frames[-1]
        profile.own[leaf] += count
        if len(frames) > 1:
            profile.callers.setdefault(leaf, Counter())[frames[-2]] += count
        profile.layers[layer_of(leaf)] += count
        for frame in set(frames):
            profile.inclusive[frame] += count
    return profile


def read_profile(path: Path) -> Profile:
    """Summarise a py-spy raw output file."""
    return summarise(path.read_text(errors="replace").splitlines())


def print_profile(profile: Profile, us_per_call: float, top: int = 25) -> None:
    """Markdown tables: by layer, then the top functions by own time, then Pilothouse's own."""
    total = profile.samples or 1

    def us(samples: int) -> str:
        return f"{samples / total * us_per_call:,.0f}"

    print("\nBy layer (own time of the innermost Python frame):\n")
    print("| layer | share | µs per call |")
    print("|---|---:|---:|")
    for layer, samples in profile.layers.most_common():
        print(f"| {layer} | {samples / total:.1%} | {us(samples)} |")
    print(f"\nTop {top} functions by own time:\n")
    print("| function | own | µs per call | inclusive | mostly called from |")
    print("|---|---:|---:|---:|---|")
    for frame, samples in profile.own.most_common(top):
        callers = profile.callers.get(frame, Counter()).most_common(2)
        called_from = ", ".join(f"`{c.label}` {n / samples:.0%}" for c, n in callers)
        print(
            f"| `{frame.label}` | {samples / total:.1%} | {us(samples)} "
            f"| {profile.inclusive[frame] / total:.1%} | {called_from} |"
        )
    ours = [
        (f, n)
        for f, n in profile.inclusive.most_common()
        if "pilothouse/" in f.path and not f.path.endswith(ENTRY_POINTS)
    ]
    print(f"\nPilothouse's functions by inclusive time (top {top}):\n")
    print("| function | inclusive | µs per call | own |")
    print("|---|---:|---:|---:|")
    for frame, samples in ours[:top]:
        print(
            f"| `{frame.label}` | {samples / total:.1%} | {us(samples)} "
            f"| {profile.own[frame] / total:.1%} |"
        )
