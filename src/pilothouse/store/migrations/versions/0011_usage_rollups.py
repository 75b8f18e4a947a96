"""usage: each day's calls summed by attribution, and which usage rows are summed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNROLLED = sa.text("rolled_up IS NULL")


def upgrade() -> None:
    """Apply this migration. Rows already stored are left unsummed: the roll-up sums them."""
    op.add_column("usage_records", sa.Column("rolled_up", sa.Integer(), nullable=True))
    op.create_index(
        "ix_usage_unrolled",
        "usage_records",
        ["org_id", "created_at"],
        sqlite_where=UNROLLED,
        postgresql_where=UNROLLED,
    )
    op.create_table(
        "usage_rollups",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attribution", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("team_id", sa.String(length=40), nullable=True),
        sa.Column("project", sa.String(length=200), nullable=True),
        sa.Column("repository", sa.String(length=400), nullable=True),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("skills", sa.Text(), nullable=False),
        sa.Column("plugins", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.String(length=40), nullable=False),
        sa.Column("model_alias", sa.String(length=200), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("cost_picos_rest", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_usage_rollups_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("org_id", "day", "attribution", name=op.f("pk_usage_rollups")),
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_table("usage_rollups")
    op.drop_index("ix_usage_unrolled", table_name="usage_records")
    op.drop_column("usage_records", "rolled_up")
