"""Budget tables: the budgets, their counters per window, and the reservations in flight."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from pilothouse.store.schema import ID, NAME, JSONText, UTCDateTime, metadata

budgets = Table(
    "budgets",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False, index=True),
    Column("name", NAME, nullable=False),
    # org | team | user | project | use_case | repository | session | key | label
    Column("scope_kind", String(20), nullable=False),
    # The scope's id or name; "" for the organization; "name=value" for a label.
    Column("scope_value", String(400), nullable=False),
    # day | week | month | total (UTC, from the clock: a new window is a new counter row)
    Column("window", String(10), nullable=False),
    Column("limit_picos", BigInteger, nullable=False),
    # hard (refuse) | soft (alert only)
    Column("enforcement", String(10), nullable=False),
    # Percentages of the limit that alert, ascending (JSON list of ints).
    Column("thresholds", JSONText, nullable=False),
    # Above ``at_percent``, calls for ``from`` (or any alias when null) go to ``to`` (JSON or null).
    Column("downgrade", JSONText, nullable=True),
    Column("created_by", ID, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("org_id", "scope_kind", "scope_value", "window"),
)

budget_counters = Table(
    "budget_counters",
    metadata,
    Column("budget_id", ID, ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True),
    # The window's first instant (UTC); the epoch for a "total" budget.
    Column("window_start", BigInteger, primary_key=True),
    Column("spent_picos", BigInteger, nullable=False, default=0),
    Column("reserved_picos", BigInteger, nullable=False, default=0),
    Column("calls", Integer, nullable=False, default=0),
)

budget_contexts = Table(
    "budget_contexts",
    metadata,
    # What the reservations of calls alike share (``budgets/contexts.py``): the counters they
    # go to and their usage rows' attribution and shape, as JSON, keyed by its hash.
    Column("id", String(40), primary_key=True),
    Column("body", Text, nullable=False),
    # Epoch seconds a writer last wrote it (at most an hour apart while calls use it); the
    # sweeper deletes one no reservation names that is a day old.
    Column("seen_at", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

budget_reservations = Table(
    "budget_reservations",
    metadata,
    # One per admitted call with a budget or rate limit on any of its scopes; settling deletes
    # it. Written and deleted once a call: kept narrow (what calls alike share is its context;
    # no foreign key to check, no timestamp to format, no index besides the key; on SQLite the
    # key holds the row).
    Column("request_id", String(64), primary_key=True),
    Column("amount_picos", BigInteger, nullable=False),
    # The budget_contexts row: the counters the amount was reserved on, and what the call's
    # usage row says of who made it and how; a sweeper writes the row from it if the call
    # never settles.
    Column("context_id", String(40), nullable=False),
    # [[counter key, amount taken, kind], ...]: the rate-limit counters the call holds.
    Column("rate_charges", JSONText, nullable=False, default="[]"),
    # When the call was reserved, epoch microseconds (an orphan's usage row is dated so).
    Column("created_us", BigInteger, nullable=False),
    # Epoch seconds after which the reservation is taken for an orphan's (the process serving
    # the call pushes it back while the call runs). The sweeper scans the table: it holds only
    # the calls in flight.
    Column("expires_at", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

rate_counters = Table(
    "rate_counters",
    metadata,
    # "<org>|rpm|<scope>|<minute>", "<org>|tpm|<scope>|<minute>" or "<org>|conc|<scope>"
    Column("key", String(600), primary_key=True),
    Column("count", BigInteger, nullable=False, default=0),
    # Epoch seconds after which a per-minute row is of no use (swept); null for concurrency.
    Column("expires_at", BigInteger, nullable=True),
    Index("ix_rate_counters_expires", "expires_at"),
)

budget_alerts = Table(
    "budget_alerts",
    metadata,
    # One per budget, window and threshold: the key makes each alert fire once per window,
    # whichever replica sees the threshold crossed first.
    Column("budget_id", ID, ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("threshold", Integer, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("spent_picos", BigInteger, nullable=False),
    Column("limit_picos", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Delivery to the configured webhooks: retried with backoff until delivered or given up.
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_budget_alerts_next_attempt", "next_attempt_at"),
)
