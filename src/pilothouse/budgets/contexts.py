"""Reservation contexts: what the reservations of calls alike share, written once, not per call.

A reservation row must let the sweeper write its call's usage row, should the process serving
the call stop: who made the call (the principal's attribution), how (endpoint, model, stream)
and which budget counters it went to. Calls of one session share all of that, so it is kept
once as a **context** (``budget_contexts``: the JSON and a key made from its hash, the same on
every replica) and a reservation row holds only the call's own fields: request id, amount,
context, rate-limit counters, time and expiry. The row shrank from about 700 to about 100
bytes, so the calls in flight fit in a page or two of SQLite's b-tree instead of one page per
six calls, and each tick writes that many fewer pages (bench/README.md, eleventh pass).

A context is worked out once per principal, call shape, set of budgets and UTC day
(``budgets.ledger.Ledger.ask`` keeps it with the counters charged), written by the ledger's
writer in the tick of the first reservation that needs it (an upsert, idempotent across
replicas), and written again, to say it is still in use, once an hour at most while calls use
it (``Written.due``). The sweeper deletes a context that no reservation names and no writer
has written for a day (``budgets/ledger.py`` ``Ledger.sweep``): a writer that still uses one
wrote it within the hour, so it is never deleted under a call that needs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from pilothouse.budgets.reserve import BudgetKey

# The usage-row fields a principal decides (``gateway.exchange.principal_fields``).
PRINCIPAL_FIELDS = (
    "org_id",
    "session_id",
    "key_id",
    "user_id",
    "team_id",
    "project",
    "repository",
    "labels",
    "skills",
    "plugins",
)
# A context is written again, to say it is in use, once this old (seconds) ...
REFRESH_SECONDS = 3600
# ... and deleted by the sweeper once no reservation names it and it is this old (seconds).
KEEP_SECONDS = 86_400
MEMO_MAX = 10_000  # call shapes kept (``Ledger.ask``), and contexts' writes (``Written``)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


CallShape = tuple[str | None, str, str, str | None, int]
"""A call's shape, as the gateway hands it to ``Ledger.ask`` for every budgeted call (a plain
tuple: a ``CallContext`` costs five times as much to make): ``CallContext``'s fields after the
principal's."""


class CallContext(NamedTuple):
    """What a reservation keeps of its call's usage row besides the request id and the time:
    the principal's fields (one mapping per principal, made once) and the call's shape."""

    fields: Mapping[str, Any]
    client_session: str | None
    endpoint: str
    model_alias: str
    downgraded_from: str | None
    stream: int

    @property
    def shape(self) -> CallShape:
        """The call's shape (``CallShape``)."""
        return (
            self.client_session,
            self.endpoint,
            self.model_alias,
            self.downgraded_from,
            self.stream,
        )

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> CallContext:
        """The context of a usage row (as the gateway writes it)."""
        return cls(
            {name: row[name] for name in PRINCIPAL_FIELDS},
            row["client_session"],
            row["endpoint"],
            row["model_alias"],
            row["downgraded_from"],
            int(row["stream"]),
        )


@dataclass(frozen=True, slots=True)
class Context:
    """A context as stored: its key and its JSON (the usage row's fields and the charges)."""

    id: str
    body: str


def make(call: CallContext, charges: tuple[BudgetKey, ...]) -> Context:
    """The stored form of a context: canonical JSON, keyed by its hash (so replicas making the
    same context make the same key)."""
    row = {
        **call.fields,
        "client_session": call.client_session,
        "endpoint": call.endpoint,
        "model_alias": call.model_alias,
        "downgraded_from": call.downgraded_from,
        "stream": call.stream,
    }
    body = orjson.dumps({"charges": charges, "row": row}, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    return Context(f"ctx_{digest}", body.decode())


def read(body: str) -> tuple[list[BudgetKey], dict[str, Any]]:
    """A stored context's counters and usage-row fields."""
    raw = orjson.loads(body)
    return [(str(b), int(w)) for b, w in raw["charges"]], dict(raw["row"])


class Written:
    """The contexts a writer has written, and when (epoch seconds): what a tick must write."""

    def __init__(self) -> None:
        self._at: dict[str, int] = {}

    def due(self, contexts: Mapping[str, Context], now: int) -> list[Context]:
        """Those of ``contexts`` never written here, or not for ``REFRESH_SECONDS``."""
        at, since = self._at, now - REFRESH_SECONDS
        return [c for i, c in contexts.items() if at.get(i, -REFRESH_SECONDS) <= since]

    def wrote(self, contexts: list[Context], now: int) -> None:
        """``contexts`` were committed at ``now``."""
        if len(self._at) >= MEMO_MAX:
            self._at.clear()  # written again at their next use: harmless
        for context in contexts:
            self._at[context.id] = now


def created_at(micros: int) -> datetime:
    """A reservation's time (epoch microseconds) as the usage row's timestamp."""
    return _EPOCH + timedelta(microseconds=micros)
