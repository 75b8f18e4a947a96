"""Dashboard tables: people's signed-in browser sessions."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table

from pilothouse.store.schema import ID, UTCDateTime, metadata

web_sessions = Table(
    "web_sessions",
    metadata,
    # The SHA-256 of the cookie's token: the token itself is stored nowhere.
    Column("id", String(64), primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("user_id", ID, ForeignKey("users.id"), nullable=False),
    # The token every form of this session carries (CSRF), compared in constant time.
    Column("csrf", String(64), nullable=False),
    # How the person signed in: password | oidc.
    Column("method", String(10), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Index("ix_web_sessions_user", "user_id"),
)

__all__ = ["web_sessions"]
