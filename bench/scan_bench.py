"""How well does the prompt-injection scanner (``pilothouse.policy.scan``) tell injections from
ordinary content, and what does a scan cost?

Corpora:

- **bastioncorpus** (PyPI ``bastioncorpus``): labelled rows, malicious payloads (direct and
  indirect injection, overrides, personas, exfiltration, obfuscation, in five languages) and
  benign "false-positive traps" that use the same words ("ignore my previous email", base64
  attachments, "act as a tutor").
- **raginject** (PyPI ``raginject``): documents with an injected payload, as retrieved text an
  agent reads; each one's benign twin is the same document with the payload taken out.
- **code** and **docs**: what a coding agent reads all day, chunked as tool results (``--chunk``,
  4 KB): the Python source of the standard library (tests included) and of a few installed
  packages, and the README/METADATA text of every installed distribution (those about prompt
  injection, which quote attacks on purpose, are left out).

Every row, document and file goes to the *train* or the *test* split by a hash of its id (half
each). Rules are developed looking at the train split only (``--split train --show N`` prints
what they miss and what they wrongly flag there); the model (``--model``) is trained on the train
split only; what is reported is the test split.

The model is a ``WordNgramDetector`` (logistic regression over word uni- and bigrams, scored on
64-word windows): positives are the train split's malicious rows and injected payloads; negatives
half of its benign items (rows, documents, and 64-word windows of code and docs, 20,000 at most);
its bias is then set on the other half of the benign train items, corpus by corpus
(``calibrate``).

    .venv/bin/python bench/scan_bench.py [--quick] [--model] [--model-out PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import random
import re
import statistics
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pilothouse.policy.scan import Detector, Scanner, WordNgramDetector, normalize

CODE_PACKAGES = ("httpx", "sqlalchemy", "pydantic", "starlette", "fastapi", "openai", "anthropic")
# Distributions whose docs quote prompt-injection attacks on purpose, and this project.
NOT_BENIGN_DOCS = ("bastioncorpus", "raginject", "pilothouse")
WINDOW = 64
STRIDE = 32
# The model's bias is set so that this share of the train split's benign items scores below
# CALIBRATION_TARGET (not enough to flag alone, enough to tip a weak rule over).
CALIBRATION_QUANTILE = 0.995
CALIBRATION_TARGET = 0.25
MAX_NEGATIVE_WINDOWS = 20_000  # code and docs windows sampled as negatives


@dataclass(frozen=True)
class Item:
    """One thing to scan: its corpus, id, split, text and label (True: an injection)."""

    corpus: str
    id: str
    split: str
    text: str
    injected: bool


def split_of(key: str) -> str:
    return "train" if hashlib.sha256(key.encode()).digest()[0] % 2 == 0 else "test"


# --- corpora -----------------------------------------------------------------------------------


def bastion_items() -> Iterator[Item]:
    from bastioncorpus import load_corpus  # type: ignore[import-untyped]

    for row in load_corpus():
        yield Item(
            "bastioncorpus", row.id, split_of(f"bastion:{row.id}"), row.stripped(), row.is_malicious
        )


def raginject_items() -> Iterator[Item]:
    import raginject

    for pattern in raginject.load_patterns():
        split = split_of(f"raginject:{pattern.id}")
        doc = pattern.injected_content
        yield Item("raginject", pattern.id, split, doc, True)
        payload = (pattern.payload or "").strip()
        if payload and payload in doc:
            yield Item("raginject", pattern.id, split, doc.replace(payload, "").strip(), False)


def raginject_payloads(split: str) -> list[str]:
    import raginject

    return [
        p.payload
        for p in raginject.load_patterns()
        if p.payload and split_of(f"raginject:{p.id}") == split
    ]


def chunks(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def code_files() -> Iterator[tuple[str, Path]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" not in path.parts and "dist-packages" not in path.parts:
            yield f"stdlib/{path.relative_to(stdlib)}", path
    for package in CODE_PACKAGES:
        root = site_packages() / package
        for path in sorted(root.rglob("*.py")):
            yield f"{package}/{path.relative_to(root)}", path


def doc_files() -> Iterator[tuple[str, Path]]:
    root = site_packages()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0].lower().startswith(NOT_BENIGN_DOCS) or not path.is_file():
            continue
        if path.name == "METADATA" or path.suffix.lower() in {".md", ".rst", ".txt"}:
            yield str(rel), path


def file_items(
    corpus: str, files: Iterable[tuple[str, Path]], size: int, limit: int | None
) -> list[Item]:
    chosen = sorted(files, key=lambda f: hashlib.sha256(f[0].encode()).digest())
    items = []
    for key, path in chosen[:limit] if limit else chosen:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        split = split_of(f"{corpus}:{key}")
        items += [
            Item(corpus, f"{key}#{n}", split, c, False) for n, c in enumerate(chunks(text, size))
        ]
    return items


# --- the model ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9']+")


def features(text: str) -> Counter[str]:
    tokens = _TOKEN.findall(normalize(text).lower())
    grams = Counter(tokens)
    grams.update(" ".join(tokens[i : i + 2]) for i in range(len(tokens) - 1))
    return grams


def windows(text: str) -> Iterator[str]:
    tokens = _TOKEN.findall(normalize(text).lower())
    for start in range(0, max(1, len(tokens) - WINDOW + STRIDE), STRIDE):
        yield " ".join(tokens[start : start + WINDOW])


def train(
    positives: list[str], negatives: list[str], epochs: int = 8, l2: float = 1e-3
) -> WordNgramDetector:
    """Logistic regression by SGD, classes weighted to balance, features seen in three examples."""
    raw = [(features(t), 1.0) for t in positives] + [(features(t), 0.0) for t in negatives]
    seen = Counter(f for x, _ in raw for f in x)
    vocab = {f for f, n in seen.items() if n >= 3}
    data = [({f: c for f, c in x.items() if f in vocab}, y) for x, y in raw]
    weight_of = {1.0: len(data) / (2 * len(positives)), 0.0: len(data) / (2 * len(negatives))}
    w: dict[str, float] = {}
    bias = 0.0
    rng = random.Random(7)
    for epoch in range(epochs):
        rng.shuffle(data)
        rate = 0.2 / (1 + epoch)
        for x, y in data:
            z = bias + sum(w.get(f, 0.0) * c for f, c in x.items())
            p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
            g = (p - y) * weight_of[y]
            bias -= rate * g
            for f, c in x.items():
                w[f] = w.get(f, 0.0) * (1 - rate * l2) - rate * g * c
    kept = {f: round(v, 4) for f, v in w.items() if abs(v) >= 0.05}
    return WordNgramDetector(kept, round(bias, 4), ngrams=(1, 2), window=WINDOW, stride=STRIDE)


def calibrate(
    detector: WordNgramDetector, benign: dict[str, list[str]], quantile: float, target: float
) -> None:
    """Move the bias so that, in every corpus, the ``quantile`` of the benign texts' scores is
    at most ``target``: a model fitted on a few dozen positives, all prose, is far too eager on
    prose, and the scanner adds its score to the rules' as independent evidence."""
    highest = -math.inf
    for texts in benign.values():
        logits = sorted(detector.logit(t) - detector.bias for t in texts)
        if logits:
            highest = max(highest, logits[min(len(logits) - 1, int(quantile * len(logits)))])
    detector.bias = round(math.log(target / (1 - target)) - highest, 4)


def model_data(items: list[Item]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Positives and negatives to fit on, and benign texts to calibrate on: all from the train
    split, the benign items divided between fitting and calibrating by a second hash."""
    train_items = [i for i in items if i.split == "train"]
    positives = [i.text for i in train_items if i.injected and i.corpus == "bastioncorpus"]
    positives += raginject_payloads("train")
    fit: list[Item] = []
    calibration: list[Item] = []
    for item in train_items:
        if item.injected:
            continue
        half = fit if split_of(f"calibrate:{item.corpus}:{item.id}") == "train" else calibration
        half.append(item)
    negatives = [i.text for i in fit if i.corpus not in ("code", "docs")]
    windows_ = [w for i in fit if i.corpus in ("code", "docs") for w in windows(i.text)]
    negatives += random.Random(7).sample(windows_, min(len(windows_), MAX_NEGATIVE_WINDOWS))
    by_corpus: dict[str, list[str]] = {}
    for item in calibration:
        by_corpus.setdefault(item.corpus, []).append(item.text)
    return positives, negatives, by_corpus


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Row:
    corpus: str
    scanner: str
    positives: int
    negatives: int
    detected: int
    false_positives: int
    nbytes: int
    seconds: float
    p50_us: float


def measure(
    corpus: str, name: str, scanner: Scanner, items: list[Item]
) -> tuple[Row, list[tuple[Item, bool]]]:
    outcomes = []
    times = []
    gc.disable()
    try:
        for item in items:
            t0 = time.perf_counter_ns()
            flagged = scanner.scan(item.text).flagged
            times.append(time.perf_counter_ns() - t0)
            outcomes.append((item, flagged))
    finally:
        gc.enable()
    pos = [f for i, f in outcomes if i.injected]
    neg = [f for i, f in outcomes if not i.injected]
    row = Row(
        corpus,
        name,
        len(pos),
        len(neg),
        sum(pos),
        sum(neg),
        sum(len(i.text.encode()) for i in items),
        sum(times) / 1e9,
        statistics.median(times) / 1e3 if times else 0.0,
    )
    return row, outcomes


def page_p50_us(scanner: Scanner, items: list[Item], page: int = 20_000) -> float:
    """p50 of scanning 20 KB pages made of consecutive chunks."""
    text = "".join(i.text for i in items)
    pages = [text[i : i + page] for i in range(0, len(text) - page, page)][:400]
    times = []
    for p in pages:
        t0 = time.perf_counter_ns()
        scanner.scan(p)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3 if times else 0.0


def pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}% ({n}/{d})" if d else "-"


def table(rows: list[Row]) -> str:
    lines = [
        "| corpus | scanner | n (injected / benign) | detection rate | false-positive rate | MB/s "
        "| p50 µs/item |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mbs = r.nbytes / r.seconds / 1e6 if r.seconds else 0.0
        lines.append(
            f"| {r.corpus} | {r.scanner} | {r.positives} / {r.negatives} "
            f"| {pct(r.detected, r.positives)} "
            f"| {pct(r.false_positives, r.negatives)} | {mbs:.1f} | {r.p50_us:.0f} |"
        )
    return "\n".join(lines)


def show(outcomes: list[tuple[Item, bool]], scanner: Scanner, limit: int) -> None:
    misses = [i for i, f in outcomes if i.injected and not f]
    wrong = [i for i, f in outcomes if not i.injected and f]
    for title, group in (("missed", misses), ("wrongly flagged", wrong)):
        for item in group[:limit]:
            result = scanner.scan(item.text)
            pats = ",".join(f.pattern for f in result.findings)
            text = " ".join(item.text.split())[:300]
            print(f"  {title} {item.corpus}:{item.id} score={result.score} [{pats}]\n      {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a sample of the code and docs files")
    parser.add_argument("--chunk", type=int, default=4096, help="characters per code/docs chunk")
    parser.add_argument("--split", choices=("train", "test"), default="test", help="what to report")
    parser.add_argument("--model", action="store_true", help="also train and measure the model")
    parser.add_argument("--model-out", type=Path, help="write the trained model here (JSON)")
    parser.add_argument("--show", type=int, default=0, help="print N misses and false positives")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if args.show and args.split == "test":
        parser.error(
            "--show prints the train split only (--split train): rules are not tuned on test"
        )

    limit_code, limit_docs = (300, 200) if args.quick else (None, None)
    t0 = time.perf_counter()
    items = list(bastion_items()) + list(raginject_items())
    items += file_items("code", code_files(), args.chunk, limit_code)
    items += file_items("docs", doc_files(), args.chunk, limit_docs)
    print(
        f"loaded {len(items)} items in {time.perf_counter() - t0:.1f} s; "
        f"load average {Path('/proc/loadavg').read_text().split()[0]}"
    )

    scanners: list[tuple[str, Scanner]] = [("patterns", Scanner())]
    if args.model or args.model_out:
        positives, negatives, benign = model_data(items)
        t0 = time.perf_counter()
        detector = train(positives, negatives)
        calibrate(detector, benign, CALIBRATION_QUANTILE, CALIBRATION_TARGET)
        print(
            f"trained on {len(positives)} positives and {len(negatives)} negatives (train split) i"
            "n "
            f"{time.perf_counter() - t0:.1f} s: {len(detector.weights)} weights"
        )
        if args.model_out:
            args.model_out.write_text(json.dumps(detector.to_json("scan_bench.py, train split")))
        model: Detector = detector
        scanners.append(("patterns+model", Scanner(model)))

    rows: list[Row] = []
    for name, scanner in scanners:
        scanner.scan("warm up")
        for corpus in ("bastioncorpus", "raginject", "code", "docs"):
            chosen = [i for i in items if i.corpus == corpus and i.split == args.split]
            row, outcomes = measure(corpus, name, scanner, chosen)
            rows.append(row)
            if args.show:
                show(outcomes, scanner, args.show)
        code = [i for i in items if i.corpus == "code" and i.split == args.split]
        print(f"{name}: p50 {page_p50_us(scanner, code):.0f} µs per 20 KB page of code")
    print(f"\nsplit: {args.split}\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))


if __name__ == "__main__":
    main()
