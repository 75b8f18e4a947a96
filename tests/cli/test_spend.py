"""``pilothouse spend`` and ``pilothouse usage`` over real LLM calls to a running server.

The server is shared with other CLI tests, so each test labels its sessions with a run id of its
own and narrows every query by that label.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import openai
import pytest

from pilothouse.cli.spend import money
from tests.cli.conftest import Cli


def _run_id() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


def _session(cli: Cli, run: str, repo: str) -> str:
    """Open a session labelled with ``run`` in ``repo``; returns its session key."""
    created = cli.json("sessions", "create", "--repo", repo, "--label", f"run={run}")
    return str(created["key"]["token"])


def _call(cli: Cli, token: str, model: str) -> None:
    sdk = openai.OpenAI(api_key=token, base_url=f"{cli.server.url}/v1", max_retries=0)
    with sdk:
        sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "what does this cost?"}]
        )


def _arrange(cli: Cli) -> str:
    """Three calls from two repositories under a new run label; returns the label's value."""
    run = _run_id()
    api_token = _session(cli, run, "acme/api")
    web_token = _session(cli, run, "acme/web")
    _call(cli, api_token, "gpt-4o-mini")
    _call(cli, api_token, "gpt-4o-mini")
    _call(cli, web_token, "demo")
    return run


def test_spend_by_repo_sums_each_repositorys_calls(cli: Cli) -> None:
    run = _arrange(cli)
    report = cli.json("spend", "--by", "repo,model", "--label", f"run={run}")
    calls = {(g["keys"]["repo"], g["keys"]["model"]): g["calls"] for g in report["groups"]}
    assert calls == {("acme/api", "gpt-4o-mini"): 2, ("acme/web", "demo"): 1}
    rows = cli.json("usage", "--label", f"run={run}")["data"]
    assert report["totals"]["calls"] == 3
    assert report["totals"]["cost_picos"] == sum(r["cost_picos"] for r in rows) > 0
    assert Decimal(report["totals"]["cost"]) * 10**12 == report["totals"]["cost_picos"]


def test_spend_prints_a_table_with_costs_in_dollars_and_a_total(cli: Cli) -> None:
    run = _arrange(cli)
    report = cli.json("spend", "--by", "repo", "--label", f"run={run}")
    out = cli.ok("spend", "--by", "repo", "--label", f"run={run}").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["spend"]
    assert lines[1].split()[:3] == ["REPO", "CALLS", "INPUT"]
    api_line = next(line for line in lines if line.startswith("acme/api"))
    api_group = next(g for g in report["groups"] if g["keys"]["repo"] == "acme/api")
    assert api_line.split()[1] == "2"
    assert api_line.split()[-1] == money(api_group["cost"])
    assert lines[-1].startswith("total: 3 calls, ")
    assert lines[-1].endswith(money(report["totals"]["cost"]))


@pytest.mark.parametrize(
    ("exact", "shown"),
    [
        ("0.000123450000", "$0.00012345"),
        ("5.000000000000", "$5.00"),
        ("12.500000000000", "$12.50"),
        ("0.000000000001", "$0.000000000001"),
        ("0.000000000000", "$0.00"),
    ],
)
def test_money_shows_the_exact_cost_without_trailing_zeros(exact: str, shown: str) -> None:
    assert money(exact) == shown


def test_spend_by_day_puts_todays_calls_in_todays_utc_bucket(cli: Cli) -> None:
    run = _arrange(cli)
    report = cli.json("spend", "--interval", "day", "--label", f"run={run}")
    today = datetime.now(UTC).date()
    (group,) = report["groups"]
    assert datetime.fromisoformat(group["bucket"]).date() == today
    assert group["calls"] == 3
    table = cli.ok("spend", "--interval", "day", "--label", f"run={run}").stdout
    assert table.splitlines()[1].split()[0] == "BUCKET"
    assert f"{today.isoformat()} 00:00:00" in table


def test_usage_lists_calls_newest_first_up_to_the_limit(cli: Cli) -> None:
    run = _arrange(cli)
    everything = cli.json("usage", "--label", f"run={run}")["data"]
    assert len(everything) == 3
    assert [r["created_at"] for r in everything] == sorted(
        (r["created_at"] for r in everything), reverse=True
    )
    page: dict[str, Any] = cli.json("usage", "--label", f"run={run}", "--limit", "2")
    assert [r["request_id"] for r in page["data"]] == [r["request_id"] for r in everything[:2]]
    assert page["next_cursor"] is not None
    web = cli.json("usage", "--label", f"run={run}", "--repo", "acme/web")["data"]
    assert [r["model"] for r in web] == ["demo"]


def test_usage_prints_one_line_per_call(cli: Cli) -> None:
    run = _arrange(cli)
    out = cli.ok("usage", "--label", f"run={run}", "--model", "gpt-4o-mini").stdout
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["TIME", "MODEL", "STATUS"]
    calls = [line for line in lines[2:] if "gpt-4o-mini" in line]
    assert len(calls) == 2
    assert all(" ok " in line and "acme/api" in line and "$0." in line for line in calls)


def test_a_bad_group_by_is_refused_with_the_servers_message(cli: Cli) -> None:
    result = cli.run("spend", "--by", "colour")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: validation_error: ")
    assert "group_by" in result.stderr and "colour" in result.stderr


def test_a_member_may_not_read_spend_but_finance_may(cli: Cli) -> None:
    tokens = {}
    for role in ("member", "finance"):
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        user = cli.json("users", "create", email, "--role", role)
        tokens[role] = cli.json("keys", "create", "--user", user["id"])["token"]
    refused = cli.run("spend", key=tokens["member"])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: forbidden: ")
    assert "usage:read" in refused.stderr
    assert "totals" in cli.json("spend", key=tokens["finance"])
