"""``pilothouse audit``: verify the tamper-evident audit chain and read (or follow) its events."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from pilothouse.cli.client import MAX_PAGE, ApiClient, JsonOption, KeyOption, UrlOption, connect
from pilothouse.cli.output import console, print_json, print_json_line, when

INTERRUPT_CHECK_SECONDS = 0.1  # how often a follow's pause looks whether Ctrl-C was pressed

app = typer.Typer(name="audit", help="Verify and read the audit log.", no_args_is_help=True)


@app.command("verify")
def verify(
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            metavar="SEQ:HASH",
            help="A checkpoint printed by an earlier verify; the chain must still contain it.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Verify your organization's audit chain end to end.

    Exits 0 when every event matches its hash and follows the one before it, and prints a
    checkpoint (SEQ:HASH) to keep for later runs; exits 1 naming the first altered, deleted
    or reordered event otherwise.
    """
    with connect(url, key) as api:
        result = api.get("/audit/verify", {"checkpoint": checkpoint})
    if json_out:
        print_json(result)
    elif result["ok"]:
        typer.echo(f"ok: {result['checked']} events checked, chain intact")
        typer.echo(f"head: {result['head_seq']}:{result['head_hash']}")
    else:
        brk = result["first_break"]
        typer.echo(f"BROKEN ({brk['kind']}): {brk['message']}")
        typer.echo(f"checked {result['checked']} events before the break")
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("tail")
def tail(
    limit: Annotated[
        int,
        typer.Option(
            "--limit", metavar="N", min=1, max=MAX_PAGE, help="How many recent events to show."
        ),
    ] = 20,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            metavar="ACTION",
            help="Only this action, or a prefix ending in * (key.*).",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")
    ] = False,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.0, hidden=True)] = 1.0,
    max_polls: Annotated[int | None, typer.Option("--max-polls", min=0, hidden=True)] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Print the most recent audit events, oldest first; --follow keeps printing new ones.

    With --json, prints one JSON event per line (JSON Lines), so a follow can be piped.
    Following asks the server for events after the last one seen, once a second.
    """
    # A follow takes Ctrl-C from before its client opens until after it closes (see
    # ``_interrupted``); a plain tail is interrupted as any command is.
    interrupts = _interrupted() if follow else nullcontext(Interrupt())
    with interrupts as interrupt, connect(url, key) as api:
        page = api.get("/audit/events", {"action": action, "limit": limit})
        recent = list(reversed(page["data"]))
        _print_events(recent, json_out)
        if not follow:
            return
        last = max((e["seq"] for e in recent), default=0)
        _follow(api, action, last, json_out, poll_interval, max_polls, interrupt)


@dataclass
class Interrupt:
    """Whether Ctrl-C was pressed: a plain flag, which the signal handler sets without taking
    any lock (it runs in the main thread between any two bytecodes, and a lock the main thread
    held just then, a ``threading.Event``'s say, would never be let go)."""

    pressed: bool = False

    def press(self, _signum: int, _frame: object) -> None:
        self.pressed = True

    def waited(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless Ctrl-C is pressed (looked at every tenth of a second);
        whether it was."""
        deadline = time.monotonic() + seconds
        while not self.pressed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, INTERRUPT_CHECK_SECONDS))
        return self.pressed


@contextmanager
def _interrupted() -> Iterator[Interrupt]:
    """Ctrl-C (SIGINT) sets a flag, for as long as the block runs, instead of raising
    ``KeyboardInterrupt``: raised inside the HTTP client (a request, or closing it), that could
    leave its connection pool's lock held, and the process would then wait on it for ever.
    Once pressed, the command is ending: Ctrl-C is ignored from then on, so pressing it again
    while the process exits changes nothing."""
    interrupt = Interrupt()
    previous = signal.signal(signal.SIGINT, interrupt.press)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN if interrupt.pressed else previous)


def _follow(
    api: ApiClient,
    action: str | None,
    after: int,
    json_out: bool,
    interval: float,
    max_polls: int | None,
    interrupt: Interrupt,
) -> None:
    """Poll for events after ``after`` every ``interval`` seconds until Ctrl-C (``max_polls``
    bounds tests)."""
    polls = 0
    while (max_polls is None or polls < max_polls) and not interrupt.waited(interval):
        polls += 1
        full = True
        while full and not interrupt.pressed:
            page = api.get(
                "/audit/events", {"action": action, "after_seq": after, "limit": MAX_PAGE}
            )
            _print_events(page["data"], json_out)
            after = page["next_after_seq"] if page["next_after_seq"] is not None else after
            full = len(page["data"]) == MAX_PAGE


def _print_events(events: list[dict[str, Any]], json_out: bool) -> None:
    out = console()
    for event in events:
        if json_out:
            print_json_line(event)
            continue
        actor, target = event["actor"], event["target"]
        who = f"{actor['kind']}:{actor['id']}" if actor["id"] else actor["kind"]
        what = f"{target['type']}:{target['id']}" if target["id"] else (target["type"] or "-")
        out.print(
            f"{event['seq']:>6}  {when(event['time'])}  {event['action']:<22} "
            f"{event['outcome']:<8} {who} -> {what}",
            markup=False,
        )
    if not json_out:
        out.file.flush()
