"""mcp: pinned tool definitions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "mcp_pins",
        sa.Column("server", sa.String(length=40), nullable=False),
        sa.Column("tool", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("seen_sha256", sa.String(length=64), nullable=True),
        sa.Column("seen_definition", sa.Text(), nullable=True),
        sa.Column("first_seen_at", WHEN, nullable=False),
        sa.Column("changed_at", WHEN, nullable=True),
        sa.Column("approved_by", sa.String(length=40), nullable=True),
        sa.Column("approved_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("server", "tool", name=op.f("pk_mcp_pins")),
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_table("mcp_pins")
