"""Secrets tables: the sealed values (or where an external one lives), who may use each and
how, the leases agents took, and a check value per master key that proves a replica holds the
key the store's secrets were sealed with."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from pilothouse.store.schema import ID, NAME, UTCDateTime, metadata

secrets = Table(
    "secrets",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("name", NAME, nullable=False),
    Column("description", Text, nullable=False, default=""),
    # builtin (sealed here) | env | file | vault (``ref`` says where)
    Column("backend", String(10), nullable=False),
    Column("ref", Text, nullable=True),
    # builtin: the master key that wraps the data key, the wrapped data key, the ciphertext.
    Column("key_id", String(40), nullable=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("ciphertext", LargeBinary, nullable=True),
    # Bumped by every rotation: a lease names the version it handed out.
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", ID, nullable=True),
    Column("rotated_at", UTCDateTime, nullable=False),
    UniqueConstraint("org_id", "name"),
)

secret_grants = Table(
    "secret_grants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("secret_id", ID, ForeignKey("secrets.id"), nullable=False),
    # Who: a selector such as team:platform, repo:acme/api, label:env=ci, session:<id>, or *.
    Column("subject", String(300), nullable=False),
    # inject (Pilothouse uses it for them) | lease (they may read it)
    Column("use", String(10), nullable=False),
    Column("ttl_seconds", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", ID, nullable=True),
    Index("ix_secret_grants_secret_id", "secret_id"),
)

secret_leases = Table(
    "secret_leases",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    # Kept after the secret is deleted: the lease is part of the record.
    Column("secret_id", ID, nullable=False),
    Column("secret_name", NAME, nullable=False),
    Column("grant_id", ID, nullable=False),
    Column("session_id", ID, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("reads", Integer, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    # expired | revoked | session_ended | secret_deleted | grant_revoked
    Column("end_reason", String(20), nullable=True),
    Index("ix_secret_leases_session", "org_id", "session_id", "secret_id"),
)

secret_keys = Table(
    "secret_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    # A known value sealed under the key: opening it proves the key is the same one.
    Column("check_wrapped", LargeBinary, nullable=False),
    Column("check_sealed", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

__all__ = ["secret_grants", "secret_keys", "secret_leases", "secrets"]
