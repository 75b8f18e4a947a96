"""``pilothouse audit``: verify names a tampered event; tail reads and follows the log."""

from __future__ import annotations

import json
import shlex
import sqlite3
import uuid
from pathlib import Path

from tests.cli.conftest import Cli, RunningServer


def _tamper(database: Path, seq: int) -> str:
    """Alter one event's details as someone with write access to the file; return its id."""
    with sqlite3.connect(database) as db:
        db.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        (event_id,) = db.execute("SELECT id FROM audit_events WHERE seq = ?", (seq,)).fetchone()
        db.execute(
            "UPDATE audit_events SET details = '{\"forged\":true}' WHERE id = ?", (event_id,)
        )
    db.close()
    return str(event_id)


def test_audit_verify_reports_an_intact_chain_with_its_head(cli: Cli) -> None:
    cli.json("teams", "create", f"audited-{uuid.uuid4().hex[:8]}")
    result = cli.ok("audit", "verify")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok: ")
    assert "chain intact" in lines[0]
    report = cli.json("audit", "verify")
    assert report["ok"] is True
    assert report["checked"] >= 1
    assert lines[1].startswith("head: ")
    seq, digest = lines[1].removeprefix("head: ").split(":")
    assert int(seq) >= report["checked"] - 1
    assert len(digest) == 64


def test_audit_verify_accepts_its_own_head_as_a_checkpoint(cli: Cli) -> None:
    head = cli.ok("audit", "verify").stdout.splitlines()[1].removeprefix("head: ")
    cli.json("teams", "create", f"later-{uuid.uuid4().hex[:8]}")
    assert cli.ok("audit", "verify", "--checkpoint", head).stdout.startswith("ok: ")


def test_audit_verify_refuses_a_checkpoint_the_chain_does_not_contain(cli: Cli) -> None:
    result = cli.run("audit", "verify", "--checkpoint", "1:" + "0" * 64)
    assert result.exit_code == 1
    assert "differs from the checkpoint" in result.stdout


def test_audit_verify_names_a_tampered_event_and_exits_1(fresh_server: RunningServer) -> None:
    cli = Cli(fresh_server)
    for i in range(3):
        cli.json("teams", "create", f"team-{i}")
    event_id = _tamper(fresh_server.database, 2)
    result = cli.run("audit", "verify")
    assert result.exit_code == 1
    assert result.stdout.startswith("BROKEN (altered): ")
    assert f"event 2 ({event_id}) does not match its hash" in result.stdout
    as_json = cli.run("audit", "verify", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["first_break"]["event_id"] == event_id


def test_audit_tail_prints_the_latest_events_oldest_first(cli: Cli) -> None:
    names = [f"tail-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    teams = [cli.json("teams", "create", name)["id"] for name in names]
    events = [
        json.loads(line)
        for line in cli.ok("audit", "tail", "--limit", "3", "--json").stdout.splitlines()
    ]
    assert [e["target"]["id"] for e in events] == teams
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    table = cli.ok("audit", "tail", "--limit", "3").stdout
    assert all(team_id in table for team_id in teams)


def test_audit_tail_filters_by_action_prefix(cli: Cli) -> None:
    cli.json("keys", "create", "--name", "for-the-log")
    lines = cli.ok("audit", "tail", "--action", "key.*", "--json").stdout.splitlines()
    actions = {json.loads(line)["action"] for line in lines}
    assert "key.created" in actions
    assert all(action.startswith("key.") for action in actions)


def test_audit_tail_follow_stops_after_the_bounded_polls(cli: Cli) -> None:
    team = cli.json("teams", "create", f"follow-{uuid.uuid4().hex[:8]}")
    result = cli.ok(
        *shlex.split("audit tail --limit 1 --json --follow --max-polls 2 --poll-interval 0")
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["target"]["id"] for e in events] == [team["id"]]
