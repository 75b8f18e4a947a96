"""budget reservations kept narrow: no organization, no creation time, expiry in epoch seconds

A reservation row is written and deleted once per budgeted call. It loses the foreign key to
organizations (checked at every insert; its usage row says the organization), the creation
time (its usage row says it) and the index on its expiry (the sweeper scans a table that holds
only the calls in flight); its expiry is whole epoch seconds. On SQLite the primary key holds
the row (``WITHOUT ROWID``): one b-tree, not two. Rows in the table are kept.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = "request_id, amount_picos, charges, rate_charges, usage_row"


def _postgres() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def upgrade() -> None:
    """Apply this migration."""
    op.drop_index("ix_budget_reservations_expires", table_name="budget_reservations")
    if _postgres():
        op.drop_column("budget_reservations", "org_id")  # and its foreign key
        op.drop_column("budget_reservations", "created_at")
        op.alter_column(
            "budget_reservations",
            "expires_at",
            type_=sa.BigInteger(),
            postgresql_using="CAST(floor(extract(epoch FROM expires_at)) AS BIGINT)",
        )
        return
    op.create_table(
        "budget_reservations_narrow",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("amount_picos", sa.BigInteger(), nullable=False),
        sa.Column("charges", sa.Text(), nullable=False),
        sa.Column("rate_charges", sa.Text(), nullable=False),
        sa.Column("usage_row", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_budget_reservations")),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO budget_reservations_narrow ({KEPT}, expires_at)"
        f" SELECT {KEPT}, CAST(strftime('%s', expires_at) AS INTEGER) FROM budget_reservations"
    )
    op.drop_table("budget_reservations")
    op.rename_table("budget_reservations_narrow", "budget_reservations")


def downgrade() -> None:
    """Revert this migration (a row's creation time becomes its expiry)."""
    if _postgres():
        op.alter_column(
            "budget_reservations",
            "expires_at",
            type_=sa.DateTime(timezone=True),
            postgresql_using="to_timestamp(expires_at)",
        )
        op.add_column(
            "budget_reservations", sa.Column("org_id", sa.String(length=40), nullable=True)
        )
        op.add_column(
            "budget_reservations",
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        )
        op.execute(
            "UPDATE budget_reservations SET org_id = usage_row::jsonb ->> 'org_id',"
            " created_at = expires_at"
        )
        op.alter_column("budget_reservations", "org_id", nullable=False)
        op.alter_column("budget_reservations", "created_at", nullable=False)
        op.create_foreign_key(
            op.f("fk_budget_reservations_org_id_organizations"),
            "budget_reservations",
            "organizations",
            ["org_id"],
            ["id"],
        )
    else:
        op.create_table(
            "budget_reservations_wide",
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
        moment = "strftime('%Y-%m-%d %H:%M:%S.000000', expires_at, 'unixepoch')"
        op.execute(
            f"INSERT INTO budget_reservations_wide ({KEPT}, org_id, expires_at, created_at)"
            f" SELECT {KEPT}, json_extract(usage_row, '$.org_id'), {moment}, {moment}"
            " FROM budget_reservations"
        )
        op.drop_table("budget_reservations")
        op.rename_table("budget_reservations_wide", "budget_reservations")
    op.create_index(
        "ix_budget_reservations_expires", "budget_reservations", ["expires_at"], unique=False
    )
