"""policy: versioned documents, recorded checks, approvals, and a session's taint

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=40)
WHEN = sa.DateTime(timezone=True)


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["org_id"], ["organizations.id"], name=op.f(f"fk_{table}_org_id_organizations")
    )


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("agent_sessions") as batch:
        batch.add_column(sa.Column("tainted_at", WHEN, nullable=True))
        batch.add_column(sa.Column("taint_reason", sa.Text(), nullable=True))
    op.create_table(
        "policy_versions",
        sa.Column("org_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=10), nullable=False),
        sa.Column("author_kind", sa.String(length=20), nullable=False),
        sa.Column("author_id", ID, nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        _org_fk("policy_versions"),
        sa.PrimaryKeyConstraint("org_id", "version", name=op.f("pk_policy_versions")),
    )
    op.create_table(
        "policy_checks",
        sa.Column("id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=True),
        sa.Column("key_id", ID, nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("approval_id", ID, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        _org_fk("policy_checks"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_checks")),
    )
    op.create_index("ix_policy_checks_org_id", "policy_checks", ["org_id", "id"])
    op.create_table(
        "approvals",
        sa.Column("id", ID, nullable=False),
        sa.Column("org_id", ID, nullable=False),
        sa.Column("check_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=True),
        sa.Column("session_user_id", ID, nullable=True),
        sa.Column("key_id", ID, nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("action_hash", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("decided_at", WHEN, nullable=True),
        sa.Column("decided_by", ID, nullable=True),
        sa.Column("used_at", WHEN, nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("added_rule", sa.String(length=200), nullable=True),
        _org_fk("approvals"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index("ix_approvals_org_status", "approvals", ["org_id", "status", "id"])
    op.create_index("ix_approvals_org_hash", "approvals", ["org_id", "action_hash"])


def downgrade() -> None:
    """Revert this migration."""
    op.drop_index("ix_approvals_org_hash", table_name="approvals")
    op.drop_index("ix_approvals_org_status", table_name="approvals")
    op.drop_table("approvals")
    op.drop_index("ix_policy_checks_org_id", table_name="policy_checks")
    op.drop_table("policy_checks")
    op.drop_table("policy_versions")
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_column("taint_reason")
        batch.drop_column("tainted_at")
