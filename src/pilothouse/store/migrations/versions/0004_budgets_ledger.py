"""budgets, their counters per window, reservations, and rate-limit counters

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("downgraded_from", sa.String(length=200), nullable=True))
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope_kind", sa.String(length=20), nullable=False),
        sa.Column("scope_value", sa.String(length=400), nullable=False),
        sa.Column("window", sa.String(length=10), nullable=False),
        sa.Column("limit_picos", sa.BigInteger(), nullable=False),
        sa.Column("enforcement", sa.String(length=10), nullable=False),
        sa.Column("thresholds", sa.Text(), nullable=False),
        sa.Column("downgrade", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_budgets_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint(
            "org_id",
            "scope_kind",
            "scope_value",
            "window",
            name=op.f("uq_budgets_org_id_scope_kind_scope_value_window"),
        ),
    )
    op.create_index(op.f("ix_budgets_org_id"), "budgets", ["org_id"], unique=False)
    op.create_table(
        "budget_counters",
        sa.Column("budget_id", sa.String(length=40), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("spent_picos", sa.BigInteger(), nullable=False),
        sa.Column("reserved_picos", sa.BigInteger(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
            name=op.f("fk_budget_counters_budget_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("budget_id", "window_start", name=op.f("pk_budget_counters")),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("amount_picos", sa.BigInteger(), nullable=False),
        sa.Column("charges", sa.Text(), nullable=False),
        sa.Column("rate_charges", sa.Text(), nullable=False),
        sa.Column("usage_row", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_budget_reservations_org_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_budget_reservations")),
    )
    op.create_index(
        "ix_budget_reservations_expires", "budget_reservations", ["expires_at"], unique=False
    )
    op.create_table(
        "rate_counters",
        sa.Column("key", sa.String(length=600), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_counters")),
    )
    op.create_index("ix_rate_counters_expires", "rate_counters", ["expires_at"], unique=False)
    op.create_table(
        "budget_alerts",
        sa.Column("budget_id", sa.String(length=40), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("spent_picos", sa.BigInteger(), nullable=False),
        sa.Column("limit_picos", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
            name=op.f("fk_budget_alerts_budget_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_budget_alerts_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint(
            "budget_id", "window_start", "threshold", name=op.f("pk_budget_alerts")
        ),
    )
    op.create_index(
        "ix_budget_alerts_next_attempt", "budget_alerts", ["next_attempt_at"], unique=False
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_index("ix_budget_alerts_next_attempt", table_name="budget_alerts")
    op.drop_table("budget_alerts")
    op.drop_index("ix_rate_counters_expires", table_name="rate_counters")
    op.drop_table("rate_counters")
    op.drop_index("ix_budget_reservations_expires", table_name="budget_reservations")
    op.drop_table("budget_reservations")
    op.drop_table("budget_counters")
    op.drop_index(op.f("ix_budgets_org_id"), table_name="budgets")
    op.drop_table("budgets")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("downgraded_from")
