"""How the CLI prints: raw JSON for scripts, Rich tables for people, one-line errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 200
"""Width used when stdout is not a terminal, so ids in piped tables are not folded."""


def console() -> Console:
    """A console on the current stdout (looked up per call: tests swap stdout)."""
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out.width = PIPE_WIDTH
    return out


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON, unstyled, for scripts."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_json_line(data: Any) -> None:
    """Print ``data`` as one line of JSON (JSON Lines, for streams)."""
    typer.echo(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def fail(message: str, *, status: int = 1) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``status``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


def note(message: str) -> None:
    """Print a remark for the person at the terminal on stderr (stdout stays parseable)."""
    typer.echo(message, err=True)


def cell(value: Any) -> str:
    """A value as table text: ``-`` for nothing, lists joined, mappings as ``k=v``."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    return str(value)


def when(value: str | None) -> str:
    """An API timestamp shortened to the second for tables."""
    if not value:
        return "-"
    date, _, rest = value.partition("T")
    return f"{date} {rest[:8]}" if rest else value


def show_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """Print rows under the given column headings."""
    table = Table(*columns, title=title, title_justify="left", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*(Text(cell(v)) for v in row))
    if table.row_count == 0:
        console().print(f"(no {title or 'rows'})", markup=False)
        return
    console().print(table)


def show_record(fields: Mapping[str, Any], *, title: str | None = None) -> None:
    """Print one object as a two-column field/value table."""
    table = Table(title=title, title_justify="left", box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in fields.items():
        table.add_row(name, Text(cell(value)))
    console().print(table)


def emit_record(
    data: Any,
    json_out: bool,
    fields: Callable[[Any], Mapping[str, Any]],
    *,
    title: str | None = None,
) -> None:
    """Print one API object: raw JSON for scripts, else its chosen fields as a table."""
    if json_out:
        print_json(data)
    else:
        show_record(fields(data), title=title)


def show_once(label: str, secret: str) -> None:
    """Print a token that the server will never show again, with a warning saying so."""
    console().print(f"{label}: {secret}", markup=False)
    note("Store it now: it is shown this once and cannot be recovered.")
