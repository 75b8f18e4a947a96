"""Audit tables: events chained per organization, and each chain's head."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, String, Table, Text

from pilothouse.store.schema import ID, NAME, JSONText, metadata

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("actor_kind", String(20), nullable=False),
    Column("actor_id", ID, nullable=True),
    Column("action", String(80), nullable=False),
    Column("target_type", String(40), nullable=True),
    Column("target_id", NAME, nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("details", JSONText, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("uq_audit_events_org_seq", "org_id", "seq", unique=True),
    Index("ix_audit_events_org_action", "org_id", "action"),
    # A session's (or any object's) events: its timeline, and the API's target_id filter.
    Index("ix_audit_events_org_target", "org_id", "target_id"),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("org_id", ID, ForeignKey("organizations.id"), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("note", Text, nullable=False, default=""),
)
