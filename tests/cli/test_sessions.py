"""``pilothouse sessions``: sessions are opened, filtered, shown and ended."""

from __future__ import annotations

import shlex
import uuid

from tests.cli.conftest import Cli


def _project() -> str:
    return f"proj-{uuid.uuid4().hex[:8]}"


def test_an_ended_session_shows_status_ended_with_its_outcome(cli: Cli) -> None:
    opened = cli.json("sessions", "create", "--project", _project())
    session_id = opened["session"]["id"]
    ended = cli.ok("sessions", "end", session_id, "--outcome", "failed", "--detail", "tests broke")
    assert ended.stdout == f"ended session {session_id}: failed\n"
    shown = cli.json("sessions", "show", session_id)
    assert shown["status"] == "ended"
    assert (shown["outcome"], shown["outcome_detail"]) == ("failed", "tests broke")


def test_sessions_create_prints_the_id_and_a_key_that_authenticates_as_the_session(
    cli: Cli,
) -> None:
    result = cli.ok("sessions", "create", "--project", _project(), "--label", "env=ci")
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert set(fields) == {"session", "session key"}
    assert "shown this once" in result.stderr
    me = cli.json("whoami", key=fields["session key"])
    assert me["kind"] == "session"
    assert me["session_id"] == fields["session"]
    assert me["labels"] == {"env": "ci"}


def test_an_ended_sessions_key_stops_working(cli: Cli) -> None:
    opened = cli.json("sessions", "create")
    cli.ok("sessions", "end", opened["session"]["id"])
    result = cli.run("whoami", key=opened["key"]["token"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


def test_sessions_create_records_the_whole_context(cli: Cli) -> None:
    team = cli.json("teams", "create", f"team-{uuid.uuid4().hex[:8]}")
    project = _project()
    created = cli.json(
        *shlex.split(
            f"sessions create --team {team['id']} --project {project} --use-case refactor"
            " --repo github.com/acme/api --branch main --ticket ACME-1 --agent-kind claude-code"
            " --agent-version 1.2 --skill python --skill sql --plugin lint"
            " --label env=ci --label tier=gold --ttl 600"
        )
    )
    session = cli.json("sessions", "show", created["session"]["id"])
    assert session["team_id"] == team["id"]
    assert (session["project"], session["use_case"]) == (project, "refactor")
    assert (session["repository"], session["branch"]) == ("github.com/acme/api", "main")
    assert session["ticket"] == "ACME-1"
    assert session["agent"] == {"kind": "claude-code", "version": "1.2"}
    assert (session["skills"], session["plugins"]) == (["python", "sql"], ["lint"])
    assert session["labels"] == {"env": "ci", "tier": "gold"}
    assert session["key_prefix"] == created["key"]["prefix"]


def test_sessions_list_filters_by_project_label_and_status(cli: Cli) -> None:
    project = _project()
    gold = cli.json("sessions", "create", "--project", project, "--label", "tier=gold")
    cli.json("sessions", "create", "--project", project, "--label", "tier=silver")
    cli.json("sessions", "create", "--project", _project(), "--label", "tier=gold")
    found = cli.json("sessions", "list", "--project", project, "--label", "tier=gold")["data"]
    assert [s["id"] for s in found] == [gold["session"]["id"]]
    cli.ok("sessions", "end", gold["session"]["id"])
    active = cli.json("sessions", "list", "--project", project, "--status", "active")["data"]
    ended = cli.json("sessions", "list", "--project", project, "--status", "ended")["data"]
    assert len(active) == 1
    assert [s["id"] for s in ended] == [gold["session"]["id"]]


def test_sessions_list_table_names_each_session(cli: Cli) -> None:
    project = _project()
    opened = cli.json("sessions", "create", "--project", project, "--repo", "acme/web")
    table = cli.ok("sessions", "list", "--project", project).stdout
    assert opened["session"]["id"] in table
    assert "acme/web" in table
    assert opened["key"]["token"] not in table


def test_a_label_without_equals_is_a_usage_error(cli: Cli) -> None:
    result = cli.run("sessions", "create", "--label", "tier")
    assert result.exit_code == 2
    assert "key=value" in result.stderr


def test_an_unknown_outcome_is_refused_before_any_request(cli: Cli) -> None:
    opened = cli.json("sessions", "create")
    result = cli.run("sessions", "end", opened["session"]["id"], "--outcome", "exploded")
    assert result.exit_code == 2
    assert cli.json("sessions", "show", opened["session"]["id"])["status"] == "active"
