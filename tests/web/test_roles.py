"""The dashboard authorizes exactly as the API does: an auditor sees approvals but cannot
decide them (refused and audited like the API's refusal), a member sees only their own
sessions (in the API too), finance sees spend but not the audit log or approvals; and a
session's timeline puts its LLM calls, checks and approvals in order with totals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from pilothouse.budgets.model import Window, window_start
from pilothouse.identity import timeline
from pilothouse.services import Services
from tests.api.test_spend import _row, insert_rows
from tests.conftest import Api, MutableClock
from tests.web.browser import Browser, person

ASKING = """\
default: allow
rules:
  - id: ask-deploys
    channel: shell
    match: {program: ./deploy.sh}
    decision: ask
    reason: deploys need a second pair of eyes
"""


async def waiting_approval(api: Api, token: str) -> dict[str, Any]:
    """A pending approval, asked by the session whose key is ``token``."""
    await api.ok("PUT", "/api/v1/policy", json={"source": ASKING})
    body = {"channel": "shell", "action": {"command": "./deploy.sh prod"}}
    asked = await api.ok("POST", "/api/v1/check", token, json=body)
    assert asked["decision"] == "ask"
    approval: dict[str, Any] = asked["approval"]
    return approval


async def chat(client: httpx.AsyncClient, token: str) -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
    reply = await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {token}"}
    )
    assert reply.status_code == 200, reply.text


async def test_an_auditor_sees_approvals_but_cannot_decide_them(
    api: Api, client: httpx.AsyncClient
) -> None:
    session = await api.session()
    approval = await waiting_approval(api, session["key"]["token"])
    auditor_id, email, _ = await person(api, "auditor")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        queue = await browser.get("/approvals")
        assert queue.status_code == 200 and approval["id"] in queue.text
        assert "Approve</button>" not in queue.text  # nothing offered they may not do
        tried = await browser.post_form(
            "/approvals", f"/approvals/{approval['id']}/approve", comment="looks fine"
        )
    assert tried.status_code == 403 and "approvals:decide" in tried.text
    still = await api.ok("GET", f"/api/v1/approvals/{approval['id']}")
    assert still["status"] == "pending"
    denied = await api.ok("GET", "/api/v1/audit/events?action=access.denied")
    (event,) = [e for e in denied["data"] if e["actor"]["id"] == auditor_id]
    assert event["details"]["permission"] == "approvals:decide"
    assert event["details"]["path"] == f"/approvals/{approval['id']}/approve"


async def test_security_approves_with_a_comment_from_the_queue(
    api: Api, client: httpx.AsyncClient
) -> None:
    session = await api.session()
    approval = await waiting_approval(api, session["key"]["token"])
    _, email, _ = await person(api, "security")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        done = await browser.post_form(
            "/approvals", f"/approvals/{approval['id']}/approve", comment="checked with Ana"
        )
        assert done.status_code == 303
        history = await browser.get("/approvals")
    decided = await api.ok("GET", f"/api/v1/approvals/{approval['id']}")
    assert decided["status"] == "approved" and decided["comment"] == "checked with Ana"
    assert "checked with Ana" in history.text and "Nothing is waiting" in history.text


async def test_approving_with_a_rule_lets_the_same_action_through_from_then_on(
    api: Api, client: httpx.AsyncClient
) -> None:
    session = await api.session()
    token = session["key"]["token"]
    approval = await waiting_approval(api, token)
    _, email, _ = await person(api, "security")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        queue = await browser.get("/approvals")
        assert 'name="add_rule"' in queue.text
        # With deny it is refused, as the API refuses it, and nothing is decided.
        refused = await browser.post_form(
            "/approvals", f"/approvals/{approval['id']}/deny", add_rule="on"
        )
        assert refused.status_code == 409 and "add_rule goes with approve only" in refused.text
        assert (await api.ok("GET", f"/api/v1/approvals/{approval['id']}"))["status"] == "pending"
        done = await browser.post_form(
            "/approvals", f"/approvals/{approval['id']}/approve", add_rule="on"
        )
        assert done.status_code == 303
    decided = await api.ok("GET", f"/api/v1/approvals/{approval['id']}")
    assert decided["status"] == "approved" and decided["added_rule"]
    body = {"channel": "shell", "action": {"command": "./deploy.sh prod"}}
    again = await api.ok("POST", "/api/v1/check", token, json=body)
    assert again["decision"] == "allow"
    assert again["hits"][0]["excepted"] == decided["added_rule"]


async def test_a_member_sees_only_their_own_sessions_on_the_dashboard_and_the_api(
    api: Api, client: httpx.AsyncClient
) -> None:
    member_id, email, member_key = await person(api, "member")
    mine = await api.session(member_key)
    theirs = await api.session()
    async with Browser(client) as browser:
        await browser.sign_in(email)
        listed = await browser.get("/sessions")
        assert mine["session"]["id"] in listed.text
        assert theirs["session"]["id"] not in listed.text
        other = await browser.get(f"/sessions/{theirs['session']['id']}")
        assert other.status_code == 404
        own = await browser.get(f"/sessions/{mine['session']['id']}")
        assert own.status_code == 200
    api_list = await api.ok("GET", "/api/v1/sessions", member_key)
    assert [s["id"] for s in api_list["data"]] == [mine["session"]["id"]]
    api_other = await api.call("GET", f"/api/v1/sessions/{theirs['session']['id']}", member_key)
    assert api_other.status_code == 404
    assert mine["session"]["user_id"] == member_id
    # Everyone else oversees all of them.
    everyone = await api.ok("GET", "/api/v1/sessions")
    assert {mine["session"]["id"], theirs["session"]["id"]} <= {s["id"] for s in everyone["data"]}


async def test_finance_sees_spend_but_not_the_audit_log_or_approvals(
    api: Api, client: httpx.AsyncClient
) -> None:
    session = await api.session()
    await chat(client, session["key"]["token"])
    _, email, _ = await person(api, "finance")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        overview = await browser.get("/")
        assert 'data-spend="today"' in overview.text and "Spend over time" in overview.text
        today = overview.text.split('data-spend="today">')[1].split("<")[0]
        assert today.startswith("$0.0") and today != "$0.00"  # the demo call, to the cent's part
        assert 'href="/audit"' not in overview.text and 'href="/approvals"' not in overview.text
        assert (await browser.get("/audit")).status_code == 403
        assert (await browser.get("/approvals")).status_code == 403


async def test_the_overview_totals_are_the_apis_for_today_this_week_and_this_month(
    api: Api, client: httpx.AsyncClient, services: Services
) -> None:
    """The three figures are added up from one report by day: each must be what the API sums
    from that window's start."""
    now = services.clock.now()
    placed = [(now, 1), (now - timedelta(days=2), 10), (now - timedelta(days=10), 100)]
    placed.append((now - timedelta(days=40), 1000))
    org = services.root_org_id
    await insert_rows(services, [_row(org, at, cost_picos=d * 10**12) for at, d in placed])
    _, email, _ = await person(api, "finance")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        overview = (await browser.get("/")).text
    for name, window in (("today", Window.DAY), ("week", Window.WEEK), ("month", Window.MONTH)):
        since = window_start(window, now).isoformat()
        expected = (await api.ok("GET", "/api/v1/spend", params={"since": since}))["totals"]
        shown = overview.split(f'data-spend="{name}">')[1].split("<")[0]
        assert shown == f"${int(expected['cost_picos']) / 10**12:,.2f}", name
        calls = expected["calls"]
        assert f"{calls:,} call{'' if calls == 1 else 's'}" in overview.split(shown)[1][:200]


async def test_a_sessions_timeline_puts_its_calls_checks_and_approvals_in_order(
    api: Api, client: httpx.AsyncClient, clock: MutableClock
) -> None:
    session = await api.session(project="timeline")
    token, session_id = session["key"]["token"], session["session"]["id"]
    clock.advance(seconds=1)
    await chat(client, token)
    clock.advance(seconds=1)
    approval = await waiting_approval(api, token)
    clock.advance(seconds=1)
    await chat(client, token)
    line = await api.ok("GET", f"/api/v1/sessions/{session_id}/timeline")
    kinds = [item["kind"] for item in line["items"]]
    assert kinds == ["session.created", "llm", "policy.check", "approval", "llm"]
    totals = line["totals"]
    assert totals["llm_calls"] == 2 and totals["approvals"] == 1
    assert totals["checks"] == {"ask": 1}
    costs = [i["details"]["cost_picos"] for i in line["items"] if i["kind"] == "llm"]
    assert totals["cost_picos"] == sum(costs) > 0
    async with Browser(client) as browser:
        _, email, _ = await person(api, "auditor")
        await browser.sign_in(email)
        shown = await browser.get(f"/sessions/{session_id}")
    assert shown.status_code == 200 and approval["reason"] in shown.text
    assert shown.text.count("<td>LLM call</td>") == 2


async def test_the_spend_explorer_groups_filters_and_exports_what_the_api_reports(
    api: Api, client: httpx.AsyncClient
) -> None:
    team = await api.ok("POST", "/api/v1/teams", json={"name": "=cmd|' /C calc'!A0"})
    inside = await api.session(team_id=team["id"], project="alpha")
    outside = await api.session(project="beta")
    for token in (inside["key"]["token"], inside["key"]["token"], outside["key"]["token"]):
        await chat(client, token)
    _, email, _ = await person(api, "finance")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        shown = await browser.get("/spend?group_by=team,project&interval=none")
        assert shown.status_code == 200
        alpha = await browser.get(f"/spend?group_by=project&interval=day&team_id={team['id']}")
        exported = await browser.get("/spend.csv?group_by=team,project&interval=none")
    report = await api.ok("GET", "/api/v1/spend", params={"group_by": "team,project"})
    (mine,) = [g for g in report["groups"] if g["keys"]["project"] == "alpha"]
    assert mine["calls"] == 2 and team["name"] in shown.text.replace("&#39;", "'")
    table = alpha.text.split('id="spend-table"')[1]
    assert "alpha" in table and "beta" not in table
    assert exported.headers["content-type"].startswith("text/csv")
    rows = exported.text.strip().splitlines()
    assert rows[0] == "bucket,team,project,calls,input_tokens,output_tokens,cost_usd"
    (row,) = [r for r in rows[1:] if ",alpha," in r]
    assert row.split(",")[-1] == mine["cost"] and row.split(",")[3] == "2"
    assert not any(cell.startswith("=") for line in rows for cell in line.split(","))


async def test_the_explorer_shows_hours_for_a_week_at_most(
    api: Api, client: httpx.AsyncClient, services: Services
) -> None:
    await chat(client, (await api.session())["key"]["token"])
    _, email, _ = await person(api, "finance")
    today = services.clock.now().date()
    async with Browser(client) as browser:
        await browser.sign_in(email)
        week = f"start={today - timedelta(days=6)}&end={today}"
        shown = await browser.get(f"/spend?group_by=model&interval=hour&{week}")
        assert shown.status_code == 200 and "demo" in shown.text.split('id="spend-table"')[1]
        longer = f"start={today - timedelta(days=7)}&end={today}"
        refused = await browser.get(f"/spend?interval=hour&{longer}")
        assert refused.status_code == 422 and "hourly buckets cover at most 7 days" in refused.text
        assert (await browser.get(f"/spend?interval=day&{longer}")).status_code == 200


async def test_budgets_show_their_burn_and_finance_adds_one_checked_as_the_api_checks(
    api: Api, client: httpx.AsyncClient
) -> None:
    session = await api.session(project="burn")
    await chat(client, session["key"]["token"])
    _, email, _ = await person(api, "finance")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        bad = await browser.post_form(
            "/budgets",
            "/budgets",
            scope_kind="project",
            scope_value="burn",
            window="day",
            limit_usd="-3",
        )
        assert bad.status_code == 422 and 'id="problem"' in bad.text
        made = await browser.post_form(
            "/budgets",
            "/budgets",
            scope_kind="project",
            scope_value="burn",
            window="day",
            limit_usd="0.00005",
        )
        assert made.status_code == 303
        again = await browser.post_form(
            "/budgets",
            "/budgets",
            scope_kind="project",
            scope_value="burn",
            window="day",
            limit_usd="1",
        )
        assert again.status_code == 409  # one budget per scope and window, as in the API
        shown = await browser.get("/budgets")
    (budget,) = (await api.ok("GET", "/api/v1/budgets"))["data"]
    assert f'data-budget="{budget["id"]}"' in shown.text
    assert 'class="meter high"' in shown.text or 'class="meter over"' in shown.text
    _, auditor, _ = await person(api, "auditor")
    async with Browser(client) as browser:
        await browser.sign_in(auditor)
        seen = await browser.get("/budgets")
        assert seen.status_code == 200 and "Add a budget" not in seen.text
        tried = await browser.post_form(
            "/budgets", "/budgets", scope_kind="org", window="day", limit_usd="5"
        )
        assert tried.status_code == 403


async def test_a_long_timeline_lists_the_newest_items_and_totals_them_all(
    api: Api, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeline, "MOST_ITEMS", 2)
    session = await api.session()
    for _ in range(3):
        await chat(client, session["key"]["token"])
    line = await api.ok("GET", f"/api/v1/sessions/{session['session']['id']}/timeline")
    assert [i["kind"] for i in line["items"]].count("llm") == 2
    assert line["totals"]["llm_calls"] == 3 and line["totals"]["truncated"] is True
