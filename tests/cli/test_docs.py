"""docs/cli.md is the rendered ``--help`` of every command, so it cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from pilothouse.cli import docs
from pilothouse.cli.main import app

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_matches_the_rendered_help() -> None:
    assert CLI_MD.read_text() == docs.render(), (
        "docs/cli.md is stale: run `python -m pilothouse.cli.docs > docs/cli.md`"
    )


def test_rendering_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = docs.render()
    monkeypatch.setenv("COLUMNS", "37")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    assert docs.render() == expected
    assert "\x1b[" not in expected


def test_every_command_has_help_and_a_section_in_the_reference() -> None:
    rendered = docs.render()

    def walk(command: object, path: str) -> list[str]:
        assert isinstance(command, TyperGroup | typer.core.TyperCommand)
        assert command.help, f"{path} has no help text"
        found = [path]
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                found += walk(sub, f"{path} {name}")
        return found

    paths = walk(typer.main.get_command(app), "pilothouse")
    assert "pilothouse sessions create" in paths
    for path in paths:
        assert f"## `{path}`" in rendered


def test_hidden_test_options_stay_out_of_the_reference() -> None:
    rendered = docs.render()
    assert "--max-polls" not in rendered
    assert "--poll-interval" not in rendered
