"""Identity tables. Every tenant-owned row carries its organization."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from pilothouse.store.schema import ID, NAME, JSONText, UTCDateTime, metadata

organizations = Table(
    "organizations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", NAME, nullable=False, unique=True),
    Column("is_root", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
)

teams = Table(
    "teams",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False, index=True),
    Column("name", NAME, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("org_id", "name"),
)

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False, index=True),
    Column("email", String(320), nullable=False),
    Column("name", NAME, nullable=False, default=""),
    Column("role", String(20), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The dashboard's local sign-in: an Argon2id hash (pilothouse.web.passwords); none, no
    # password sign-in.
    Column("password_hash", String(200), nullable=True),
    UniqueConstraint("org_id", "email"),
)

team_members = Table(
    "team_members",
    metadata,
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("team_id", ID, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ID, ForeignKey("users.id"), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_team_members_user", "user_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False, index=True),
    # user | service | session
    Column("kind", String(10), nullable=False),
    Column("name", NAME, nullable=False, default=""),
    # The public lookup part of the token (unique); the secret part is stored only hashed.
    Column("lookup", String(32), nullable=False, unique=True),
    Column("prefix", String(40), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("user_id", ID, ForeignKey("users.id"), nullable=True, index=True),
    Column("session_id", ID, nullable=True, index=True),
    Column("scopes", JSONText, nullable=False, default="[]"),
    Column("allowed_labels", JSONText, nullable=False, default="[]"),
    Column("created_by", ID, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
)

agent_sessions = Table(
    "agent_sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("team_id", ID, ForeignKey("teams.id"), nullable=True),
    Column("user_id", ID, ForeignKey("users.id"), nullable=True),
    Column("project", NAME, nullable=True),
    Column("use_case", NAME, nullable=True),
    Column("repository", String(400), nullable=True),
    Column("branch", NAME, nullable=True),
    Column("ticket", NAME, nullable=True),
    Column("agent_kind", NAME, nullable=True),
    Column("agent_version", NAME, nullable=True),
    Column("skills", JSONText, nullable=False, default="[]"),
    Column("plugins", JSONText, nullable=False, default="[]"),
    Column("labels", JSONText, nullable=False, default="{}"),
    # active | ended
    Column("status", String(10), nullable=False),
    Column("outcome", String(20), nullable=True),
    Column("outcome_detail", Text, nullable=True),
    Column("created_by_key", ID, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    # Set when content the session read was flagged as a prompt injection (policy/scan.py).
    Column("tainted_at", UTCDateTime, nullable=True),
    Column("taint_reason", Text, nullable=True),
    Index("ix_agent_sessions_org_created", "org_id", "id"),
)

session_labels = Table(
    "session_labels",
    metadata,
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("session_id", ID, ForeignKey("agent_sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(63), primary_key=True),
    Column("value", NAME, nullable=False),
    Index("ix_session_labels_lookup", "org_id", "key", "value"),
)

__all__ = [
    "agent_sessions",
    "api_keys",
    "organizations",
    "session_labels",
    "team_members",
    "teams",
    "users",
]
