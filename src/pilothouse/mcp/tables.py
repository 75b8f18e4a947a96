"""MCP tables: the pinned definition of every upstream tool seen."""

from __future__ import annotations

from sqlalchemy import Column, String, Table, Text

from pilothouse.store.schema import ID, UTCDateTime, metadata

mcp_pins = Table(
    "mcp_pins",
    metadata,
    Column("server", String(40), primary_key=True),
    Column("tool", String(200), primary_key=True),
    # The approved definition (name, description, input schema) and its SHA-256.
    Column("sha256", String(64), nullable=False),
    Column("definition", Text, nullable=False),
    # approved | changed (withheld: the upstream serves another definition) | pending
    Column("status", String(10), nullable=False),
    Column("seen_sha256", String(64), nullable=True),
    Column("seen_definition", Text, nullable=True),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("changed_at", UTCDateTime, nullable=True),
    Column("approved_by", ID, nullable=True),
    Column("approved_at", UTCDateTime, nullable=True),
)

__all__ = ["mcp_pins"]
