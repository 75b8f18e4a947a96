"""The usage tables: one narrow row per LLM call, and the calls of each day summed."""

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
    text,
)

from pilothouse.store.schema import ID, NAME, JSONText, UTCDateTime, metadata

usage_records = Table(
    "usage_records",
    metadata,
    # The request id makes the write idempotent: recording the same call twice keeps one row.
    Column("request_id", String(64), primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("session_id", ID, nullable=True),
    Column("key_id", ID, nullable=True),
    Column("user_id", ID, nullable=True),
    Column("team_id", ID, nullable=True),
    Column("project", NAME, nullable=True),
    Column("repository", String(400), nullable=True),
    Column("labels", JSONText, nullable=False, default="{}"),
    Column("skills", JSONText, nullable=False, default="[]"),
    Column("plugins", JSONText, nullable=False, default="[]"),
    Column("client_session", String(100), nullable=True),
    Column("endpoint", String(40), nullable=False),
    Column("model_alias", NAME, nullable=False),
    # The alias the client asked for, when a budget's downgrade rule sent the call elsewhere.
    Column("downgraded_from", NAME, nullable=True),
    Column("deployment", NAME, nullable=True),
    Column("upstream_model", NAME, nullable=True),
    Column("stream", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cost_picos", BigInteger, nullable=False),
    Column("price_version", String(80), nullable=True),
    Column("status", String(20), nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("retries", Integer, nullable=False, default=0),
    # 1 when the call ended before its usage arrived (a cut stream, a client that left):
    # the tokens were estimated from the request and the output relayed so far.
    Column("estimated", Integer, nullable=False, default=0, server_default="0"),
    Column("ttfb_ms", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # NULL until the row is summed into ``usage_rollups`` (``gateway/rollups.py``); then 1.
    # Writers leave it out: a row is always written unsummed.
    Column("rolled_up", Integer, nullable=True),
    Index("ix_usage_org_created", "org_id", "created_at"),
    Index("ix_usage_session", "session_id"),
    # Only the rows not yet summed: what the roll-up takes and spend reports read beside it.
    Index(
        "ix_usage_unrolled",
        "org_id",
        "created_at",
        sqlite_where=text("rolled_up IS NULL"),
        postgresql_where=text("rolled_up IS NULL"),
    ),
)

UNSUMMED = frozenset({"rolled_up"})
"""The usage columns a writer leaves out: a row is written unsummed."""

usage_rollups = Table(
    "usage_rollups",
    metadata,
    # The calls of one UTC day with the same attribution, summed (``gateway/rollups.py``).
    # Every attribution column of a usage row but the session (one row per session would
    # sum nothing): reports grouped or filtered by session read the usage rows.
    Column("org_id", ID, ForeignKey("organizations.id"), primary_key=True),
    Column("day", UTCDateTime, primary_key=True),
    # A digest of the attribution columns below (NULLs never conflict in a key).
    Column("attribution", String(64), primary_key=True),
    Column("key_id", ID, nullable=True),
    Column("user_id", ID, nullable=True),
    Column("team_id", ID, nullable=True),
    Column("project", NAME, nullable=True),
    Column("repository", String(400), nullable=True),
    Column("labels", JSONText, nullable=False),
    Column("skills", JSONText, nullable=False),
    Column("plugins", JSONText, nullable=False),
    Column("endpoint", String(40), nullable=False),
    Column("model_alias", NAME, nullable=False),
    Column("deployment", NAME, nullable=True),
    Column("status", String(20), nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    # Cost in two parts, as spend reports sum it: whole micro-dollars and the pico-dollars
    # beyond them (a day's cost in pico-dollars could pass a 64-bit integer).
    Column("cost_micros", BigInteger, nullable=False),
    Column("cost_picos_rest", BigInteger, nullable=False),
)
