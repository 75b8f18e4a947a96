"""Policy tables: the versions of each organization's policy document, every check made, and
the approvals that checks answered ``ask`` wait on."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

from pilothouse.store.schema import ID, NAME, JSONText, UTCDateTime, metadata

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("org_id", ID, ForeignKey("organizations.id"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    # The YAML as it was given: what is shown, diffed and simulated.
    Column("source", Text, nullable=False),
    # api | file | approval
    Column("origin", String(10), nullable=False),
    Column("author_kind", String(20), nullable=False),
    Column("author_id", ID, nullable=True),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

policy_checks = Table(
    "policy_checks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("session_id", ID, nullable=True),
    Column("key_id", ID, nullable=False),
    Column("channel", String(20), nullable=False),
    # What a simulation replays: the action and who acted, as the engine saw them.
    Column("action", JSONText, nullable=False),
    Column("subject", JSONText, nullable=False),
    Column("decision", String(10), nullable=False),
    Column("rule", NAME, nullable=True),
    Column("policy_version", Integer, nullable=False),
    Column("approval_id", ID, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_policy_checks_org_id", "org_id", "id"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("check_id", ID, nullable=False),
    Column("session_id", ID, nullable=True),
    # The session's own user: who may not decide unless the policy lets them.
    Column("session_user_id", ID, nullable=True),
    Column("key_id", ID, nullable=False),
    Column("channel", String(20), nullable=False),
    Column("action", JSONText, nullable=False),
    # SHA-256 of the canonical channel and action: an approval is for that action only.
    Column("action_hash", String(64), nullable=False),
    Column("subject", JSONText, nullable=False),
    Column("rule", NAME, nullable=True),
    Column("reason", Text, nullable=False),
    # pending | approved | denied | expired
    Column("status", String(10), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("decided_by", ID, nullable=True),
    # An approval lets its action run once: when it did.
    Column("used_at", UTCDateTime, nullable=True),
    Column("comment", Text, nullable=True),
    Column("added_rule", NAME, nullable=True),
    Index("ix_approvals_org_status", "org_id", "status", "id"),
    Index("ix_approvals_org_hash", "org_id", "action_hash"),
)

__all__ = ["approvals", "policy_checks", "policy_versions"]
