"""``pilothouse budgets``: budgets are created, listed, shown, changed and deleted from the CLI.

The server is shared with other CLI tests, so each test scopes its budgets to a project of its
own (the organization's budget is made and deleted by one test only).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from pilothouse.cli.budgets import parse_scope
from tests.cli.conftest import Cli


def _project() -> str:
    return f"proj-{uuid.uuid4().hex[:10]}"


def _create(cli: Cli, scope: str, window: str, limit: str, *extra: str) -> dict[str, Any]:
    made: dict[str, Any] = cli.json(
        "budgets", "create", "--scope", scope, "--window", window, "--limit", limit, *extra
    )
    return made


def test_a_budget_is_created_with_every_option_and_shown(cli: Cli) -> None:
    team = cli.json("teams", "create", f"t-{uuid.uuid4().hex[:8]}")
    downgrade = ["--downgrade-at", "80", "--downgrade-to", "cheap-model"]
    downgrade += ["--downgrade-from", "big-model"]
    budget = _create(
        cli, f"team:{team['id']}", "month", "500", "--soft", "--thresholds", "60,90",
        *downgrade, "--name", "team cap",
    )  # fmt: skip
    assert budget["scope"] == f"team:{team['id']}"
    assert (budget["window"], budget["limit_usd"]) == ("month", "500.000000000000")
    assert (budget["enforcement"], budget["thresholds"]) == ("soft", [60, 90])
    assert budget["downgrade"] == {"at_percent": 80, "to": "cheap-model", "from": "big-model"}
    assert budget["name"] == "team cap"
    shown = cli.json("budgets", "show", budget["id"])
    assert {k: v for k, v in shown.items() if k != "current"} == {
        k: v for k, v in budget.items() if k != "current"
    }
    table = cli.ok("budgets", "show", budget["id"]).stdout
    fields = dict(line.rstrip().split(maxsplit=1) for line in table.splitlines())
    assert fields["limit"] == "$500.00"
    assert fields["enforcement"] == "soft"
    assert fields["thresholds"] == "60%, 90%"
    assert fields["downgrade"] == "at 80%: big-model -> cheap-model"
    assert fields["spent"] == "$0.00"
    assert fields["used"] == "0.00%"


def test_an_org_budget_takes_no_value_and_defaults_to_hard(cli: Cli) -> None:
    budget = _create(cli, "org", "total", "1")
    try:
        assert (budget["scope"], budget["scope_value"]) == ("org", "")
        assert (budget["enforcement"], budget["thresholds"]) == ("hard", [50, 80, 100])
        assert budget["current"]["resets_at"] is None
        listed = cli.json("budgets", "list", "--scope", "org")["data"]
        assert [b["id"] for b in listed] == [budget["id"]]
    finally:
        cli.ok("budgets", "delete", budget["id"])


def test_list_narrows_by_scope_and_prints_a_table(cli: Cli) -> None:
    project = _project()
    month = _create(cli, f"project:{project}", "month", "0.50")
    day = _create(cli, f"project:{project}", "day", "2")
    listed = cli.json("budgets", "list", "--scope", f"project:{project}")["data"]
    assert [b["id"] for b in listed] == [day["id"], month["id"]]
    lines = cli.ok("budgets", "list", "--scope", f"project:{project}").stdout.splitlines()
    assert lines[0].split() == ["budgets"]
    assert lines[1].split() == [
        "ID", "NAME", "SCOPE", "WINDOW", "LIMIT", "SPENT", "USED", "ENFORCEMENT", "RESETS",
    ]  # fmt: skip
    row = next(line for line in lines if line.startswith(month["id"]))
    assert f"project:{project}" in row and " month " in row and " $0.50 " in row
    assert " 0.00% " in row and " hard " in row
    assert cli.json("budgets", "list", "--scope", f"project:{_project()}")["data"] == []


def test_update_changes_only_what_is_given(cli: Cli) -> None:
    downgrade = ["--downgrade-at", "90", "--downgrade-to", "mini"]
    created = _create(cli, f"project:{_project()}", "week", "10", *downgrade)
    raised = cli.json("budgets", "update", created["id"], "--limit", "12.25", "--soft")
    assert (raised["limit_usd"], raised["enforcement"]) == ("12.250000000000", "soft")
    assert raised["downgrade"] == created["downgrade"]
    assert raised["thresholds"] == created["thresholds"]
    cleared = cli.json("budgets", "update", created["id"], "--no-downgrade", "--thresholds", "")
    assert (cleared["downgrade"], cleared["thresholds"]) == (None, [])
    assert cleared["limit_usd"] == "12.250000000000"
    hard = cli.json("budgets", "update", created["id"], "--hard", "--name", "renamed")
    assert (hard["enforcement"], hard["name"]) == ("hard", "renamed")


def test_a_budget_counts_earlier_spend_unless_told_to_count_from_now(cli: Cli) -> None:
    def created_event(budget_id: str) -> dict[str, Any]:
        out = cli.ok("audit", "tail", "--action", "budget.created", "--limit", "50", "--json")
        events = [json.loads(line) for line in out.stdout.splitlines()]
        found: dict[str, Any] = next(e for e in events if e["target"]["id"] == budget_id)
        return found

    counted = _create(cli, f"project:{_project()}", "day", "1")
    details = created_event(counted["id"])["details"]
    assert (details["earlier_spend_usd"], details["earlier_calls"]) == ("0.000000000000", 0)
    fresh = _create(cli, f"project:{_project()}", "day", "1", "--from-now")
    assert "earlier_calls" not in created_event(fresh["id"])["details"]


def test_a_deleted_budget_is_gone(cli: Cli) -> None:
    budget = _create(cli, f"project:{_project()}", "day", "3")
    assert cli.ok("budgets", "delete", budget["id"]).stdout == f"deleted budget {budget['id']}\n"
    result = cli.run("budgets", "show", budget["id"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: not_found: ")


def test_a_second_budget_on_a_scope_and_window_is_refused(cli: Cli) -> None:
    scope = f"project:{_project()}"
    first = _create(cli, scope, "day", "3")
    result = cli.run("budgets", "create", "--scope", scope, "--window", "day", "--limit", "4")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: conflict: ")
    assert first["id"] in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scope", "team:team_nope"], "error: bad_request: team 'team_nope' does not exist"),
        (["--scope", "label:nolabel"], "error: validation_error: "),
        (["--scope", "planet:mars"], "error: validation_error: "),
        (["--scope", "project:x", "--limit", "0.0000000000001"], "12 decimal places"),
    ],
)
def test_the_servers_refusal_is_printed(cli: Cli, args: list[str], message: str) -> None:
    base = {"--window": "day", "--limit": "5"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [part for pair in {**base, **given}.items() for part in pair]
    result = cli.run("budgets", "create", *argv)
    assert result.exit_code == 1
    assert message in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--scope", "org", "--window", "day", "--limit", "1", "--thresholds", "5,x"],
         "--thresholds must be whole percentages"),
        (["create", "--scope", "org", "--window", "day", "--limit", "1", "--downgrade-to", "m"],
         "needs both --downgrade-at and --downgrade-to"),
        (["update", "bud_x"], "nothing to change"),
        (["update", "bud_x", "--no-downgrade", "--downgrade-at", "5", "--downgrade-to", "m"],
         "not both"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_before_calling_the_server(
    cli: Cli, args: list[str], message: str
) -> None:
    result = cli.run("budgets", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_member_may_not_create_budgets_but_finance_may(cli: Cli) -> None:
    tokens = {}
    for role in ("member", "finance"):
        user = cli.json("users", "create", f"{role}-{uuid.uuid4().hex[:8]}@example.com",
                        "--role", role)  # fmt: skip
        tokens[role] = cli.json("keys", "create", "--user", user["id"])["token"]
    argv = ["budgets", "create", "--scope", f"project:{_project()}", "--window", "day"]
    refused = cli.run(*argv, "--limit", "1", key=tokens["member"])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: forbidden: ")
    assert "budgets:write" in refused.stderr
    made = cli.json(*argv, "--limit", "1", key=tokens["finance"])
    assert made["limit_usd"] == "1.000000000000"


@pytest.mark.parametrize(
    ("scope", "parsed"),
    [
        ("org", ("org", "")),
        ("team:team_1", ("team", "team_1")),
        ("label:use_case=review", ("label", "use_case=review")),
        ("repository:acme/api:v2", ("repository", "acme/api:v2")),
    ],
)
def test_a_scope_is_split_at_its_first_colon(scope: str, parsed: tuple[str, str]) -> None:
    assert parse_scope(scope) == parsed
