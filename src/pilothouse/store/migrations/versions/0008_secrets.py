"""secrets: sealed values, grants, leases, and master key checks

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=40)
NAME = sa.String(length=200)
WHEN = sa.DateTime(timezone=True)


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["org_id"], ["organizations.id"], name=op.f(f"fk_{table}_org_id_organizations")
    )


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "secrets",
        sa.Column("id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("backend", sa.String(length=10), nullable=False),
        sa.Column("ref", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("created_by", ID, nullable=True),
        sa.Column("rotated_at", WHEN, nullable=False),
        _org_fk("secrets"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secrets")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_secrets_org_id_name")),
    )
    op.create_table(
        "secret_grants",
        sa.Column("id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("secret_id", ID, nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("use", sa.String(length=10), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("created_by", ID, nullable=True),
        _org_fk("secret_grants"),
        sa.ForeignKeyConstraint(
            ["secret_id"], ["secrets.id"], name=op.f("fk_secret_grants_secret_id_secrets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_grants")),
    )
    op.create_index("ix_secret_grants_secret_id", "secret_grants", ["secret_id"])
    op.create_table(
        "secret_leases",
        sa.Column("id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("secret_id", ID, nullable=False),
        sa.Column("secret_name", NAME, nullable=False),
        sa.Column("grant_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("reads", sa.Integer(), nullable=False),
        sa.Column("ended_at", WHEN, nullable=True),
        sa.Column("end_reason", sa.String(length=20), nullable=True),
        _org_fk("secret_leases"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_leases")),
    )
    op.create_index(
        "ix_secret_leases_session", "secret_leases", ["org_id", "session_id", "secret_id"]
    )
    op.create_table(
        "secret_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("check_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("check_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_keys")),
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_table("secret_keys")
    op.drop_index("ix_secret_leases_session", table_name="secret_leases")
    op.drop_table("secret_leases")
    op.drop_index("ix_secret_grants_secret_id", table_name="secret_grants")
    op.drop_table("secret_grants")
    op.drop_table("secrets")
