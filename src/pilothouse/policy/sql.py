"""What a SQL text would do, read with a real parser (sqlglot), and the SQL a shell command
hands a database client (``psql -c``, ``mysql -e``, ``sqlite3 FILE SQL``, ...).

``DROP DATABASE`` inside ``psql -c "..."`` is a destructive statement; ``echo "drop database"``
runs no SQL at all. A statement the parser cannot read is reported as such (``complete``), and
one it reads only as a bare command (sqlglot's ``Command``: ``DROP OWNED BY``, ``VACUUM``) is
judged by its first keyword.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from pilothouse.policy.shell import Invocation

# sqlglot warns on its logger for each statement it reads only as a bare command.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

DESTRUCTIVE = frozenset(
    {
        "drop database",
        "drop schema",
        "drop table",
        "drop view",
        "drop index",
        "drop",
        "truncate",
        "delete without where",
        "update without where",
        "alter drop",
    }
)


@dataclass(frozen=True)
class Statement:
    """One SQL statement: what it does (``kind``: "select", "insert", "drop table", "delete
    without where", ...) and the object it names, if one."""

    kind: str
    target: str | None = None

    @property
    def destructive(self) -> bool:
        """Whether it drops, truncates, or deletes or updates every row."""
        return self.kind in DESTRUCTIVE


@dataclass
class SqlParsed:
    statements: list[Statement] = field(default_factory=list)
    complete: bool = True


def statements(sql: str, dialect: str | None = None) -> SqlParsed:
    """What each statement of ``sql`` does (``dialect``: sqlglot's name, e.g. "postgres")."""
    parsed = SqlParsed()
    try:
        found = sqlglot.parse(sql, read=dialect)
    except SqlglotError:
        parsed.complete = False
        return parsed
    for expression in found:
        if isinstance(expression, exp.Expression):
            parsed.statements.append(_statement(expression))
    return parsed


def _statement(expression: exp.Expression) -> Statement:
    if isinstance(expression, exp.Drop):
        kind = str(expression.args.get("kind") or "").lower()
        name = (
            "drop " + kind if kind in ("database", "schema", "table", "view", "index") else "drop"
        )
        tables = expression.args.get("tables") or [expression.this]
        return Statement(name, ", ".join(filter(None, map(_name, tables))) or None)
    if isinstance(expression, exp.TruncateTable):
        tables = expression.expressions
        return Statement("truncate", _name(tables[0]) if tables else None)
    if isinstance(expression, exp.Delete | exp.Update):
        verb = "delete" if isinstance(expression, exp.Delete) else "update"
        where = expression.args.get("where")
        every = where is None or _always_true(where.this)
        return Statement(f"{verb} without where" if every else verb, _name(expression.this))
    if isinstance(expression, exp.Alter):
        actions = expression.args.get("actions") or []
        if any(isinstance(a, exp.Drop) for a in actions):
            return Statement("alter drop", _name(expression.this))
        return Statement("alter", _name(expression.this))
    if isinstance(expression, exp.Command):
        word = str(expression.this or "").lower()
        return Statement("drop" if word == "drop" else word or "command")
    return Statement(expression.key)


def _always_true(condition: exp.Expression | None) -> bool:
    """``WHERE TRUE``, ``WHERE 1=1``, ``WHERE 'a'='a'``: a filter that keeps every row."""
    if isinstance(condition, exp.Boolean):
        return bool(condition.this)
    if isinstance(condition, exp.EQ):
        left, right = condition.this, condition.expression
        return isinstance(left, exp.Literal) and left == right
    if isinstance(condition, exp.Paren):
        return _always_true(condition.this)
    if isinstance(condition, exp.Or):
        return _always_true(condition.this) or _always_true(condition.expression)
    return False


def _name(node: exp.Expression | None) -> str | None:
    if node is None:
        return None
    return node.sql() or None


# Database clients and the options that carry SQL: (program, dialect, options).
_CLIENTS: dict[str, tuple[str | None, frozenset[str]]] = {
    "psql": ("postgres", frozenset({"-c", "--command"})),
    "mysql": ("mysql", frozenset({"-e", "--execute"})),
    "mariadb": ("mysql", frozenset({"-e", "--execute"})),
    "clickhouse-client": ("clickhouse", frozenset({"-q", "--query"})),
    "duckdb": ("duckdb", frozenset({"-c"})),
    "cockroach": ("postgres", frozenset({"-e", "--execute"})),
}


def sql_of(invocation: Invocation) -> Iterator[tuple[str, str | None]]:
    """Each SQL text ``invocation`` hands its database, with the parser's dialect for it."""
    name, args = invocation.name, invocation.args
    if name == "sqlite3":  # sqlite3 [OPTIONS] FILE [SQL...]
        operands = [a for a in args if not a.startswith("-")]
        for sql in operands[1:]:
            yield sql, "sqlite"
        return
    client = _CLIENTS.get(name)
    if client is None:
        return
    dialect, options = client
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in options and eq:
            yield value, dialect
        elif arg in options and i + 1 < len(args):
            yield args[i + 1], dialect
        elif len(arg) > 2 and arg[:2] in options and not arg.startswith("--"):
            yield arg[2:], dialect  # -c"DROP ..." glued to its option
