"""Alembic environment: runs on the connection handed over in ``config.attributes``."""

from __future__ import annotations

from alembic import context

import pilothouse.audit.tables
import pilothouse.budgets.tables
import pilothouse.gateway.tables
import pilothouse.identity.tables
import pilothouse.mcp.tables
import pilothouse.policy.tables
import pilothouse.secrets.tables
import pilothouse.web.tables  # noqa: F401  (register tables on the metadata)
from pilothouse.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through pilothouse.store.migrate, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
