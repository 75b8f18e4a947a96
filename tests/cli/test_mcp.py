"""``pilothouse mcp``: on a server with no MCP upstream the lists are empty and approving an
unknown pin says so (the lists with real upstreams are tested in tests/mcp)."""

from __future__ import annotations

from tests.cli.conftest import Cli


def test_the_lists_answer_and_an_unknown_pin_is_not_found(cli: Cli) -> None:
    assert cli.json("mcp", "servers") == []
    assert cli.json("mcp", "tools") == []
    assert isinstance(cli.json("mcp", "pins"), list)
    assert "MCP servers" in cli.ok("mcp", "servers").stdout
    missing = cli.run("mcp", "approve", "github", "create_issue")
    assert missing.exit_code == 1 and "not_found" in missing.stderr
