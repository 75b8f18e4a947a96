"""reservation contexts: what the reservations of calls alike share is kept once

A reservation row held its counters and its call's usage-row fields as JSON (about 700 bytes a
call); those move to ``budget_contexts``, one row per context keyed by a hash of its JSON, and
a reservation keeps the context's key and its own time (epoch microseconds). Reservations in
flight are kept, each given a context made from what it held.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _postgres() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def _contexts_table() -> None:
    op.create_table(
        "budget_contexts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_contexts")),
        sqlite_with_rowid=False,
    )


def _micros(moment: Any) -> int | None:
    """Epoch microseconds of an ISO 8601 text (naive: UTC), or None."""
    if not isinstance(moment, str):
        return None
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - EPOCH) // timedelta(microseconds=1)


def _context(charges: str, usage_row: str) -> tuple[str, str, dict[str, Any]]:
    """A context's key and JSON from what a reservation held, and the held usage row."""
    row = json.loads(usage_row)
    kept = {k: v for k, v in row.items() if k not in ("request_id", "created_at")}
    body = json.dumps(
        {"charges": json.loads(charges), "row": kept},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.blake2b(body.encode(), digest_size=16).hexdigest()
    return f"ctx_{digest}", body, row


def upgrade() -> None:
    """Apply this migration."""
    _contexts_table()
    bind = op.get_bind()
    held = bind.execute(
        sa.text(
            "SELECT request_id, amount_picos, charges, rate_charges, usage_row, expires_at"
            " FROM budget_reservations"
        )
    ).all()
    now = int(time.time())
    contexts: dict[str, str] = {}
    rows = []
    for request_id, amount, charges, rate_charges, usage_row, expires_at in held:
        context_id, body, row = _context(charges, usage_row)
        contexts[context_id] = body
        created_us = _micros(row.get("created_at"))
        rows.append(
            {
                "request_id": request_id,
                "amount_picos": amount,
                "context_id": context_id,
                "rate_charges": rate_charges,
                "created_us": expires_at * 1_000_000 if created_us is None else created_us,
                "expires_at": expires_at,
            }
        )
    if contexts:
        bind.execute(
            sa.text("INSERT INTO budget_contexts (id, body, seen_at) VALUES (:id, :body, :seen)"),
            [{"id": k, "body": v, "seen": now} for k, v in contexts.items()],
        )
    if _postgres():
        op.execute("DELETE FROM budget_reservations")
        op.drop_column("budget_reservations", "charges")
        op.drop_column("budget_reservations", "usage_row")
        op.add_column(
            "budget_reservations", sa.Column("context_id", sa.String(length=40), nullable=False)
        )
        op.add_column(
            "budget_reservations", sa.Column("created_us", sa.BigInteger(), nullable=False)
        )
    else:
        op.create_table(
            "budget_reservations_ctx",
            sa.Column("request_id", sa.String(length=64), nullable=False),
            sa.Column("amount_picos", sa.BigInteger(), nullable=False),
            sa.Column("context_id", sa.String(length=40), nullable=False),
            sa.Column("rate_charges", sa.Text(), nullable=False),
            sa.Column("created_us", sa.BigInteger(), nullable=False),
            sa.Column("expires_at", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("request_id", name=op.f("pk_budget_reservations")),
            sqlite_with_rowid=False,
        )
        op.drop_table("budget_reservations")
        op.rename_table("budget_reservations_ctx", "budget_reservations")
    if rows:
        bind.execute(
            sa.text(
                "INSERT INTO budget_reservations (request_id, amount_picos, context_id,"
                " rate_charges, created_us, expires_at) VALUES (:request_id, :amount_picos,"
                " :context_id, :rate_charges, :created_us, :expires_at)"
            ),
            rows,
        )


def downgrade() -> None:
    """Revert this migration (each reservation's context is written back into its row)."""
    bind = op.get_bind()
    held = bind.execute(
        sa.text(
            "SELECT r.request_id, r.amount_picos, r.rate_charges, r.created_us, r.expires_at,"
            " c.body FROM budget_reservations AS r JOIN budget_contexts AS c"
            " ON c.id = r.context_id"
        )
    ).all()
    rows = []
    for request_id, amount, rate_charges, created_us, expires_at, body in held:
        context = json.loads(body)
        moment = EPOCH + timedelta(microseconds=created_us)
        usage_row = {**context["row"], "request_id": request_id, "created_at": moment.isoformat()}
        rows.append(
            {
                "request_id": request_id,
                "amount_picos": amount,
                "charges": json.dumps(context["charges"]),
                "rate_charges": rate_charges,
                "usage_row": json.dumps(usage_row),
                "expires_at": expires_at,
            }
        )
    if _postgres():
        op.execute("DELETE FROM budget_reservations")
        op.drop_column("budget_reservations", "context_id")
        op.drop_column("budget_reservations", "created_us")
        op.add_column("budget_reservations", sa.Column("charges", sa.Text(), nullable=False))
        op.add_column("budget_reservations", sa.Column("usage_row", sa.Text(), nullable=False))
    else:
        op.create_table(
            "budget_reservations_wide",
            sa.Column("request_id", sa.String(length=64), nullable=False),
            sa.Column("amount_picos", sa.BigInteger(), nullable=False),
            sa.Column("charges", sa.Text(), nullable=False),
            sa.Column("rate_charges", sa.Text(), nullable=False),
            sa.Column("usage_row", sa.Text(), nullable=False),
            sa.Column("expires_at", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("request_id", name=op.f("pk_budget_reservations")),
            sqlite_with_rowid=False,
        )
        op.drop_table("budget_reservations")
        op.rename_table("budget_reservations_wide", "budget_reservations")
    if rows:
        bind.execute(
            sa.text(
                "INSERT INTO budget_reservations (request_id, amount_picos, charges,"
                " rate_charges, usage_row, expires_at) VALUES (:request_id, :amount_picos,"
                " :charges, :rate_charges, :usage_row, :expires_at)"
            ),
            rows,
        )
    op.drop_table("budget_contexts")
