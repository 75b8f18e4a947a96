"""What does redacting known secret values cost on LLM-sized request bodies, against doing
nothing and against the naive ways, and what does the credential detector cost?

    .venv/bin/python bench/redact_bench.py [--quick] [--calls 3000] [--naive-10k]

All in one process, one run, side by side:

1. **Throughput** of ``Redactor.redact`` over chat request bodies of 20 KB and 200 KB (JSON, the
   messages' text cut from this repository's docs and sources, so the run is deterministic),
   with 10, 1,000 and 10,000 known secrets (random 24 to 40 character tokens): bodies with no
   secret (the common case) and bodies holding three (raw, inside an HTTP Basic auth base64
   string, URL-encoded).
2. **Added latency** for a 20 KB body and 1,000 secrets: ``redact_bytes`` on the raw body,
   ``redact_json`` on the parsed body and ``redact`` on the text, each call timed, the calls of
   all of them and of a baseline that does nothing interleaved so that drift falls on all
   alike; p50 and p99, and what each adds to the baseline (the target: p50 under 0.2 ms).
3. **The naive alternatives** on the same 20 KB body: one ``re`` alternation of every escaped
   form (longest first), ``str.replace`` per form, and one pyahocorasick automaton over whole
   forms (what ``Redactor`` does instead: anchors, see ``pilothouse.secrets.redact``). The
   alternation is not built for 10,000 secrets unless ``--naive-10k`` (it compiles in seconds
   and takes seconds a call); every other cell stops repeating after ``--cap`` seconds.
4. **The credential detector** on the 20 KB body and on 20 KB of plain text: the default plugins,
   all plugins, and detect-secrets' own ``scan_line`` with its default settings (all plugins,
   its filters; the text a line at a time).
5. **Building** a ``Redactor`` for 10, 1,000 and 10,000 secrets.

``--quick`` runs a small version of all of it in seconds (the smoke test's).
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import platform
import random
import re
import statistics
import string
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote

if not __package__:  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ahocorasick

from pilothouse.secrets.detect import CredentialDetector
from pilothouse.secrets.redact import Redactor, encoded_forms

ROOT = Path(__file__).resolve().parent.parent
ALPHABET = string.ascii_letters + string.digits + "_-"
TARGET_ADDED_P50_MS = 0.2
KB = 1000


# --- inputs ------------------------------------------------------------------------------------


def corpus() -> str:
    """This repository's docs and Python sources, in a fixed order."""
    paths = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "src").rglob("*.py"))
    return "\n".join(p.read_text(encoding="utf-8") for p in paths)


def chat_body(text: str, size: int, start: int = 0) -> dict[str, Any]:
    """A chat completion request of about ``size`` bytes of JSON: a system prompt, then user
    and assistant turns of up to 3,000 characters of ``text`` each."""
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a coding agent. Answer briefly."}
    ]
    body: dict[str, Any] = {"model": "gpt-4o", "stream": True, "messages": messages}
    at = start
    while len(json.dumps(body)) < size:
        role = "user" if len(messages) % 2 else "assistant"
        missing = size - len(json.dumps(body)) - 30
        chunk = text[at : at + min(3000, max(missing, 1))]
        at = (at + len(chunk)) % (len(text) - 3000)
        messages.append({"role": role, "content": chunk})
    return body


def secrets_of(count: int, seed: int = 7) -> dict[str, str]:
    """``count`` random tokens of 24 to 40 characters, each labelled ``secret-<n>``."""
    rng = random.Random(seed)
    values: dict[str, str] = {}
    while len(values) < count:
        value = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(24, 40)))
        values.setdefault(value, f"secret-{len(values)}")
    return values


def with_secrets(body: dict[str, Any], values: Sequence[str]) -> dict[str, Any]:
    """``body`` with three of ``values`` in its user turns: raw, in an HTTP Basic auth header
    (base64 of ``user:<value>``), and URL-encoded in a link."""
    copy: dict[str, Any] = json.loads(json.dumps(body))
    users = [m for m in copy["messages"] if m["role"] == "user"]
    basic = base64.b64encode(f"deploy:{values[1]}".encode()).decode()
    inserts = [
        f"export API_TOKEN={values[0]}",
        f"Authorization: Basic {basic}",
        f"https://example.com/hook?token={quote(values[2], safe='')}&x=1",
    ]
    for i, insert in enumerate(inserts):
        message = users[i % len(users)]
        half = len(message["content"]) // 2
        message["content"] = f"{message['content'][:half]}\n{insert}\n{message['content'][half:]}"
    return copy


# --- timing ------------------------------------------------------------------------------------


def per_call(fn: Callable[[], object], calls: int, cap: float) -> list[float]:
    """Seconds each call took, for ``calls`` calls or until ``cap`` seconds have passed."""
    times: list[float] = []
    started = time.perf_counter()
    gc.disable()
    try:
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if t0 - started > cap:
                break
    finally:
        gc.enable()
    return times


def interleaved(fns: dict[str, Callable[[], object]], calls: int) -> dict[str, list[float]]:
    """Each function's call times, the calls taken in turn (one of each, then again)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    gc.disable()
    try:
        for _ in range(calls):
            for name, fn in fns.items():
                t0 = time.perf_counter_ns()
                fn()
                times[name].append((time.perf_counter_ns() - t0) / 1e9)
    finally:
        gc.enable()
    return times


def quantile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mbps(nbytes: int, times: list[float]) -> float:
    return nbytes / statistics.median(times) / 1e6


# --- the naive alternatives --------------------------------------------------------------------


def all_forms(values: dict[str, str]) -> dict[str, str]:
    """Every form of every value, to its marker."""
    markers: dict[str, str] = {}
    for value, label in values.items():
        for form in encoded_forms(value):
            markers.setdefault(form, f"[REDACTED:{label}]")
    return markers


def anchored_redactor(values: dict[str, str]) -> Callable[[str], str]:
    return Redactor(values).redact


def regex_redactor(markers: dict[str, str]) -> Callable[[str], str]:
    forms = sorted(markers, key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, forms)))
    return lambda text: pattern.sub(lambda m: markers[m.group()], text)


def replace_redactor(markers: dict[str, str]) -> Callable[[str], str]:
    forms = sorted(markers, key=len, reverse=True)

    def redact(text: str) -> str:
        for form in forms:
            if form in text:
                text = text.replace(form, markers[form])
        return text

    return redact


def whole_form_redactor(markers: dict[str, str]) -> Callable[[str], str]:
    """One pyahocorasick automaton over every whole form, leftmost-longest."""
    automaton = ahocorasick.Automaton()
    for form, marker in markers.items():
        automaton.add_word(form, (len(form), marker))
    automaton.make_automaton()

    def redact(text: str) -> str:
        hits = sorted((end - n + 1, -n, m) for end, (n, m) in automaton.iter(text))
        if not hits:
            return text
        parts: list[str] = []
        done = 0
        for start, minus, marker in hits:
            if start >= done:
                parts += (text[done:start], marker)
                done = start - minus
        parts.append(text[done:])
        return "".join(parts)

    return redact


# --- the report --------------------------------------------------------------------------------


def throughput(text: str, redactors: dict[int, Redactor], sizes: list[int], args: Any) -> None:
    print("\n## Redactor.redact throughput (MB/s, median call)\n")
    print("| body | secrets | no secret in it | three secrets in it |")
    print("|---|---:|---:|---:|")
    for size in sizes:
        body = chat_body(text, size)
        for count, redactor in redactors.items():
            values = list(secrets_of(count))
            clean = json.dumps(body)
            dirty = json.dumps(with_secrets(body, values[:3]))
            assert redactor.redact(clean) is clean
            assert redactor.found(dirty) == ["secret-0", "secret-1", "secret-2"]
            cells = []
            for payload in (clean, dirty):
                times = per_call(partial(redactor.redact, payload), args.repeat, args.cap)
                cells.append(f"{mbps(len(payload.encode()), times):,.0f}")
            print(f"| {len(clean) // KB} KB | {count:,} | {cells[0]} | {cells[1]} |")


def latency(text: str, redactor: Redactor, count: int, args: Any) -> None:
    body = chat_body(text, 20 * KB)
    raw = json.dumps(body).encode()
    parsed = json.loads(raw)
    as_text = raw.decode()
    fns: dict[str, Callable[[], object]] = {
        "nothing (baseline)": lambda: raw,
        "redact_bytes(raw body)": lambda: redactor.redact_bytes(raw),
        "redact_json(parsed body)": lambda: redactor.redact_json(parsed),
        "redact(body text)": lambda: redactor.redact(as_text),
    }
    times = interleaved(fns, args.calls)
    base50 = quantile(times["nothing (baseline)"], 0.5)
    base99 = quantile(times["nothing (baseline)"], 0.99)
    print(f"\n## Added latency: {len(raw) // KB} KB body, {count:,} secrets, no secret in it\n")
    print(f"{args.calls:,} calls of each, interleaved.\n")
    print("| call | p50 ms | p99 ms | added p50 ms | added p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, spent in times.items():
        p50, p99 = quantile(spent, 0.5), quantile(spent, 0.99)
        print(
            f"| {name} | {p50 * 1e3:.3f} | {p99 * 1e3:.3f} | {(p50 - base50) * 1e3:+.3f} "
            f"| {(p99 - base99) * 1e3:+.3f} |"
        )
    worst = max(quantile(t, 0.5) for name, t in times.items() if name != "nothing (baseline)")
    met = (worst - base50) * 1e3 < TARGET_ADDED_P50_MS
    print(
        f"\nTarget (added p50 under {TARGET_ADDED_P50_MS} ms for every call): "
        f"{'met' if met else 'NOT met'} ({(worst - base50) * 1e3:.3f} ms at most)."
    )


def naive(text: str, counts: list[int], args: Any) -> None:
    body = json.dumps(chat_body(text, 20 * KB))
    print(f"\n## Against the naive alternatives: {len(body) // KB} KB body, no secret in it\n")
    print("Per call, median µs (build seconds).\n")
    print("| secrets | forms | Redactor (anchors) | one automaton, whole forms | re alternation |")
    print("|---:|---:|---:|---:|---:|")
    rows = []
    for count in counts:
        values = secrets_of(count)
        markers = all_forms(values)
        cells = []
        builders: list[tuple[str, Callable[[], Callable[[str], str]]]] = [
            ("anchors", partial(anchored_redactor, values)),
            ("whole", partial(whole_form_redactor, markers)),
            ("re", partial(regex_redactor, markers)),
            ("replace", partial(replace_redactor, markers)),
        ]
        for name, build in builders:
            if name == "re" and count > 1000 and not args.naive_10k:
                cells.append("not run")
                continue
            t0 = time.perf_counter()
            redact = build()
            built = time.perf_counter() - t0
            times = per_call(partial(redact, body), args.repeat, args.cap)
            cells.append(f"{statistics.median(times) * 1e6:,.0f} ({built:.2f} s)")
        rows.append((count, len(markers), cells))
        print(f"| {count:,} | {len(markers):,} | {cells[0]} | {cells[1]} | {cells[2]} |")
    print("\n| secrets | str.replace per form |")
    print("|---:|---:|")
    for count, _, cells in rows:
        print(f"| {count:,} | {cells[3]} |")


def detector(text: str, args: Any) -> None:
    body = json.dumps(chat_body(text, 20 * KB, start=50_000))
    plain = text[50_000 : 50_000 + 20 * KB]
    default = CredentialDetector()
    everything = CredentialDetector(CredentialDetector.available())
    print("\n## Credential detector: 20 KB, no credential in it\n")
    print("| plugins | kinds | JSON body MB/s | p50 ms | plain text MB/s | p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    rows: list[tuple[str, int, Callable[[str], object]]] = [
        ("CredentialDetector() (default)", len(default.kinds), default.scan),
        ("CredentialDetector(all)", len(everything.kinds), everything.scan),
    ]
    if not args.quick:
        rows.append(("detect-secrets scan_line, default settings", 27, scan_line_each))
    for name, kinds, scan in rows:
        cells = []
        for payload in (body, plain):
            times = per_call(partial(scan, payload), args.detector_repeat, args.cap)
            cells += [
                f"{mbps(len(payload.encode()), times):.1f}",
                f"{statistics.median(times) * 1e3:.2f}",
            ]
        print(f"| {name} | {kinds} | {' | '.join(cells)} |")


def scan_line_each(text: str) -> int:
    """detect-secrets' ad hoc scan of each line of ``text``, with its default settings."""
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import default_settings

    with default_settings():
        return sum(1 for line in text.split("\n") for _ in scan_line(line))


def building(counts: list[int]) -> dict[int, Redactor]:
    print("\n## Building a Redactor\n")
    print("| secrets | forms | build s (median of 3) |")
    print("|---:|---:|---:|")
    built: dict[int, Redactor] = {}
    for count in counts:
        values = secrets_of(count)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            built[count] = Redactor(values)
            times.append(time.perf_counter() - t0)
        forms = sum(len(encoded_forms(v)) for v in values)
        print(f"| {count:,} | {forms:,} | {statistics.median(times):.3f} |")
    return built


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small run, in seconds")
    parser.add_argument("--calls", type=int, default=3000, help="latency calls of each kind")
    parser.add_argument("--repeat", type=int, default=200, help="calls per throughput cell")
    parser.add_argument("--detector-repeat", type=int, default=30, help="calls per detector cell")
    parser.add_argument("--cap", type=float, default=2.0, help="seconds per cell at most")
    parser.add_argument(
        "--naive-10k", action="store_true", help="also the re alternation of 10,000 secrets"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.repeat, args.detector_repeat, args.cap = 50, 5, 2, 0.2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [10, 100] if args.quick else [10, 1000, 10000]
    sizes = [20 * KB] if args.quick else [20 * KB, 200 * KB]
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(
        f"Python {platform.python_version()}, pyahocorasick {version('pyahocorasick')}, "
        f"detect-secrets {version('detect-secrets')}; {os.cpu_count()} CPUs, "
        f"load average {load}"
    )
    t0 = time.perf_counter()
    text = corpus()
    redactors = building(counts)
    throughput(text, redactors, sizes, args)
    middle = counts[1]
    latency(text, redactors[middle], middle, args)
    naive(text, counts, args)
    detector(text, args)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
