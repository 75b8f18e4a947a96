"""Usage rows and spend sums: real SDK calls through the gateway and rows placed in time.

Expected sums are computed here from the stored rows, so each test checks the API's grouping,
bucketing and exact arithmetic against an independent count, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import pytest
from sqlalchemy import event, insert

from pilothouse.app import build_app
from pilothouse.gateway.tables import usage_records
from pilothouse.services import Services
from pilothouse.store.engine import Store
from tests.api.conftest import audit_counts, store_snapshot
from tests.conftest import Api
from tests.gateway.conftest import anthropic_client, openai_client, usage_rows

T0 = datetime(2026, 3, 1, tzinfo=UTC)  # a Sunday


# --- arranging usage --------------------------------------------------------------------------


@pytest.fixture
async def http2(services: Services) -> AsyncIterator[httpx2.AsyncClient]:
    """An httpx2 client on the app, for the Anthropic SDK."""
    app = build_app(services.settings, services=services)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://pilothouse.test"
    ) as client:
        yield client


async def _openai(client: httpx.AsyncClient, token: str, model: str, stream: bool = False) -> None:
    sdk = openai_client(client, token)
    messages: Any = [{"role": "user", "content": f"spend test on {model}"}]
    if stream:
        reply = await sdk.chat.completions.create(model=model, messages=messages, stream=True)
        assert [chunk async for chunk in reply]
    else:
        await sdk.chat.completions.create(model=model, messages=messages)


async def _anthropic(client: httpx2.AsyncClient, token: str, model: str) -> None:
    sdk = anthropic_client(client, token)
    await sdk.messages.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "count my spend"}]
    )


class Fleet:
    """Sessions of two teams and two users, and the calls each made."""

    def __init__(self, ids: dict[str, str], sessions: dict[str, dict[str, Any]]) -> None:
        self.ids = ids
        self.sessions = sessions


@pytest.fixture
async def fleet(
    api: Api, client: httpx.AsyncClient, http2: httpx2.AsyncClient, services: Services
) -> Fleet:
    """Three sessions making six calls through the real SDKs to the demo provider."""
    payments = await api.ok("POST", "/api/v1/teams", json={"name": "payments"})
    search = await api.ok("POST", "/api/v1/teams", json={"name": "search"})
    ada = await api.ok("POST", "/api/v1/users", json={"email": "ada@example.com"})
    bob = await api.ok("POST", "/api/v1/users", json={"email": "bob@example.com"})
    s1 = await api.session(
        user_id=ada["id"],
        team_id=payments["id"],
        project="checkout",
        repository="acme/payments",
        skills=["git", "python"],
        plugins=["reviewer"],
        labels={"use_case": "bugfix", "env": "ci"},
    )
    s2 = await api.session(
        user_id=bob["id"],
        team_id=search["id"],
        project="ranking",
        repository="acme/search",
        skills=["git"],
        labels={"use_case": "feature"},
    )
    s3 = await api.session(user_id=ada["id"], team_id=payments["id"], repository="acme/payments")
    t1, t2, t3 = (s["key"]["token"] for s in (s1, s2, s3))
    await _openai(client, t1, "gpt-4o-mini")
    await _openai(client, t1, "gpt-4o-mini", stream=True)
    await _anthropic(http2, t1, "claude-sonnet-5")
    await _openai(client, t2, "demo")
    await _anthropic(http2, t2, "claude-haiku-4-5")
    await _openai(client, t3, "gpt-4o")
    assert len(await usage_rows(services)) == 6
    ids = {"payments": payments["id"], "search": search["id"], "ada": ada["id"], "bob": bob["id"]}
    return Fleet(ids, {"s1": s1, "s2": s2, "s3": s3})


def _row(org_id: str, created_at: datetime, **values: Any) -> dict[str, Any]:
    """A usage row with every required column, ``values`` overriding the defaults."""
    return {
        "request_id": f"req_{uuid.uuid4().hex}",
        "org_id": org_id,
        "labels": "{}",
        "skills": "[]",
        "plugins": "[]",
        "endpoint": "/v1/chat/completions",
        "model_alias": "demo",
        "deployment": "demo/demo-1",
        "stream": 0,
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_picos": 1000,
        "status": "ok",
        "http_status": 200,
        "retries": 0,
        "latency_ms": 12,
        "created_at": created_at,
        **values,
    }


async def insert_rows(services: Services, rows: Iterable[dict[str, Any]]) -> None:
    """Write usage rows straight to the store."""
    async with services.store.write() as conn:
        await conn.execute(insert(usage_records), list(rows))


# --- expected sums, computed from the stored rows ---------------------------------------------

_SUMMED = ("input", "output", "cache_read", "cache_write", "reasoning")


def _sums(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    cost = sum(r["cost_picos"] for r in rows)
    return {
        "calls": len(rows),
        "tokens": {kind: sum(r[f"{kind}_tokens"] for r in rows) for kind in _SUMMED},
        "cost_picos": cost,
        "cost": f"{Decimal(cost) / 10**12:.12f}",
    }


def _by(rows: Iterable[dict[str, Any]], key: Any) -> dict[Any, dict[str, Any]]:
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return {k: _sums(v) for k, v in grouped.items()}


def _groups(report: dict[str, Any], *fields: str) -> dict[Any, dict[str, Any]]:
    """The report's groups keyed by the values of ``fields`` (a 1-tuple becomes the value)."""
    found = {}
    for group in report["groups"]:
        values = tuple(group["keys"][f] for f in fields)
        sums = {k: group[k] for k in ("calls", "tokens", "cost_picos", "cost")}
        found[values[0] if len(values) == 1 else values] = sums
    assert len(found) == len(report["groups"]), "two groups with the same keys"
    return found


async def _spend(api: Api, token: str | None = None, **params: Any) -> dict[str, Any]:
    report: dict[str, Any] = await api.ok("GET", "/api/v1/spend", token, params=params)
    return report


# --- spend over real calls --------------------------------------------------------------------


async def test_spend_by_repo_sums_the_recorded_calls_exactly(
    api: Api, services: Services, fleet: Fleet
) -> None:
    rows = await usage_rows(services)
    report = await _spend(api, group_by="repo")
    assert _groups(report, "repo") == _by(rows, lambda r: r["repository"])
    assert report["totals"] == _sums(rows)
    assert report["totals"]["calls"] == 6
    assert report["totals"]["cost_picos"] > 0
    assert {g["keys"]["repo"]: g["calls"] for g in report["groups"]} == {
        "acme/payments": 4,
        "acme/search": 2,
    }
    costs = [g["cost_picos"] for g in report["groups"]]
    assert costs == sorted(costs, reverse=True)
    assert report["truncated"] is False


async def test_spend_by_user_team_and_model_sums_each_combination(
    api: Api, services: Services, fleet: Fleet
) -> None:
    rows = await usage_rows(services)
    report = await _spend(api, group_by="user,team,model")
    expected = _by(rows, lambda r: (r["user_id"], r["team_id"], r["model_alias"]))
    assert _groups(report, "user", "team", "model") == expected
    ada, payments = fleet.ids["ada"], fleet.ids["payments"]
    assert expected[(ada, payments, "gpt-4o-mini")]["calls"] == 2
    assert report["group_by"] == ["user", "team", "model"]


async def test_spend_by_label_groups_calls_without_the_label_under_null(
    api: Api, services: Services, fleet: Fleet
) -> None:
    rows = await usage_rows(services)
    report = await _spend(api, group_by="label:use_case")
    by_session = {"s1": "bugfix", "s2": "feature", "s3": None}
    session_label = {fleet.sessions[s]["session"]["id"]: v for s, v in by_session.items()}
    assert _groups(report, "label:use_case") == _by(rows, lambda r: session_label[r["session_id"]])
    assert set(_groups(report, "label:use_case")) == {"bugfix", "feature", None}


async def test_spend_by_skill_counts_a_call_under_each_of_its_skills(
    api: Api, services: Services, fleet: Fleet
) -> None:
    rows = await usage_rows(services)
    s1, s2, s3 = (fleet.sessions[s]["session"]["id"] for s in ("s1", "s2", "s3"))
    report = await _spend(api, group_by="skill")
    groups = _groups(report, "skill")
    assert groups == {
        "git": _sums(r for r in rows if r["session_id"] in (s1, s2)),
        "python": _sums(r for r in rows if r["session_id"] == s1),
        None: _sums(r for r in rows if r["session_id"] == s3),
    }
    assert groups["git"]["calls"] == 5
    # The totals count each call once, though the groups count s1's calls twice.
    assert report["totals"] == _sums(rows)
    assert sum(g["calls"] for g in groups.values()) == 9


async def test_spend_by_plugin_and_label_crosses_both(
    api: Api, services: Services, fleet: Fleet
) -> None:
    rows = await usage_rows(services)
    s1 = fleet.sessions["s1"]["session"]["id"]
    report = await _spend(api, group_by="plugin,label:env")
    assert _groups(report, "plugin", "label:env") == {
        ("reviewer", "ci"): _sums(r for r in rows if r["session_id"] == s1),
        (None, None): _sums(r for r in rows if r["session_id"] != s1),
    }


async def test_spend_without_group_by_is_one_group_of_everything(
    api: Api, services: Services, fleet: Fleet
) -> None:
    rows = await usage_rows(services)
    report = await _spend(api)
    assert report["group_by"] == []
    (group,) = report["groups"]
    assert (group["keys"], group["bucket"]) == ({}, None)
    assert {k: group[k] for k in ("calls", "tokens", "cost_picos", "cost")} == _sums(rows)
    assert report["totals"] == _sums(rows)


async def test_spend_filters_narrow_the_sums(api: Api, services: Services, fleet: Fleet) -> None:
    rows = await usage_rows(services)
    s1, s2 = (fleet.sessions[s] for s in ("s1", "s2"))

    def where(column: str, value: Any) -> list[dict[str, Any]]:
        return [r for r in rows if r[column] == value]

    s1_rows = where("session_id", s1["session"]["id"])
    cases: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        ({"repository": "acme/search"}, where("repository", "acme/search")),
        ({"user_id": fleet.ids["ada"]}, where("user_id", fleet.ids["ada"])),
        ({"team_id": fleet.ids["search"]}, where("team_id", fleet.ids["search"])),
        ({"project": "checkout"}, where("project", "checkout")),
        ({"session_id": s2["session"]["id"]}, where("session_id", s2["session"]["id"])),
        ({"key_id": s1["key"]["id"]}, where("key_id", s1["key"]["id"])),
        ({"model": "gpt-4o-mini"}, where("model_alias", "gpt-4o-mini")),
        ({"deployment": rows[0]["deployment"]}, where("deployment", rows[0]["deployment"])),
        ({"status": "ok"}, rows),
        ({"status": "upstream_error"}, []),
        ({"label": "use_case=bugfix"}, s1_rows),
        ({"label": "use_case=bugfix,env=ci"}, s1_rows),
        ({"label": ["use_case=feature", "env=ci"]}, []),
    ]
    assert len(s1_rows) == 3 and len(where("model_alias", "gpt-4o-mini")) == 2
    for params, expected in cases:
        report = await _spend(api, **params)
        assert report["totals"] == _sums(expected), params
        assert len(report["groups"]) == (1 if expected else 0), params


async def test_usage_rows_show_each_call_with_exact_cost_and_attribution(
    api: Api, services: Services, fleet: Fleet
) -> None:
    stored = {r["request_id"]: r for r in await usage_rows(services)}
    s1 = fleet.sessions["s1"]
    page = await api.ok("GET", "/api/v1/usage", params={"session_id": s1["session"]["id"]})
    assert len(page["data"]) == 3 and page["next_cursor"] is None
    for row in page["data"]:
        db = stored[row["request_id"]]
        assert row["cost_picos"] == db["cost_picos"] > 0
        assert Decimal(row["cost"]) * 10**12 == row["cost_picos"]
        assert row["tokens"] == {kind: db[f"{kind}_tokens"] for kind in _SUMMED}
        assert row["labels"] == {"use_case": "bugfix", "env": "ci"}
        assert row["skills"] == ["git", "python"]
        assert row["plugins"] == ["reviewer"]
        assert (row["user_id"], row["team_id"]) == (fleet.ids["ada"], fleet.ids["payments"])
        assert row["repository"] == "acme/payments"
        assert row["key_id"] == s1["key"]["id"]
        assert row["model"] == db["model_alias"]
        assert row["latency_ms"] == db["latency_ms"]
    assert Counter(r["model"] for r in page["data"]) == {"gpt-4o-mini": 2, "claude-sonnet-5": 1}
    assert [r["stream"] for r in page["data"] if r["model"] == "gpt-4o-mini"].count(True) == 1


# --- time buckets -----------------------------------------------------------------------------


def _use_session_time_zone(store: Store, zone: str) -> None:
    """Make every new PostgreSQL connection of ``store`` use ``zone`` as its session time zone."""

    @event.listens_for(store.engine.sync_engine, "connect")
    def _set(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET TIME ZONE '{zone}'")
        cursor.close()


@pytest.fixture
async def timeline(services: Services) -> list[dict[str, Any]]:
    """Rows spread over hours, days, weeks and months, some given in other time zones."""
    org = services.root_org_id
    plus2 = timezone(timedelta(hours=2))
    rows = [
        _row(org, T0 + timedelta(hours=1), model_alias="a", cost_picos=100),
        _row(org, T0 + timedelta(hours=1, minutes=59), model_alias="b", cost_picos=300),
        _row(org, T0 + timedelta(hours=2), model_alias="a", cost_picos=50),
        # 01:30 at +02:00 on Monday is 23:30 UTC on Sunday: the Sunday bucket.
        _row(org, datetime(2026, 3, 2, 1, 30, tzinfo=plus2), model_alias="a", cost_picos=7),
        _row(org, T0 + timedelta(days=1), model_alias="b", cost_picos=11),  # Monday 00:00
        _row(org, T0 + timedelta(days=8, hours=5), model_alias="a", cost_picos=13),
        _row(org, datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC), model_alias="b", cost_picos=17),
        _row(org, datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC), cost_picos=19),
    ]
    await insert_rows(services, rows)
    if services.store.dialect == "postgresql":
        # Far from UTC: a bucket computed in the session's zone would land on another day.
        _use_session_time_zone(services.store, "Pacific/Kiritimati")
        await services.store.dispose()
    return rows


def _buckets(report: dict[str, Any]) -> dict[tuple[str, Any], int]:
    return {(g["bucket"], g["keys"].get("model")): g["cost_picos"] for g in report["groups"]}


def _at(*args: int) -> str:
    return datetime(*args, tzinfo=UTC).isoformat().replace("+00:00", "Z")


async def test_daily_buckets_are_utc_days(api: Api, timeline: list[dict[str, Any]]) -> None:
    report = await _spend(api, interval="day")
    assert _buckets(report) == {
        (_at(2026, 2, 28), None): 19,
        (_at(2026, 3, 1), None): 100 + 300 + 50 + 7,
        (_at(2026, 3, 2), None): 11,
        (_at(2026, 3, 9), None): 13,
        (_at(2026, 4, 1), None): 17,
    }
    assert [g["bucket"] for g in report["groups"]] == sorted(g["bucket"] for g in report["groups"])
    assert report["totals"]["cost_picos"] == sum(r["cost_picos"] for r in timeline)


async def test_hourly_buckets_split_by_model_sort_by_cost_within_the_hour(
    api: Api, timeline: list[dict[str, Any]]
) -> None:
    report = await _spend(
        api, interval="hour", group_by="model", since=_at(2026, 3, 1), until=_at(2026, 3, 2)
    )
    assert [(g["bucket"], g["keys"]["model"], g["cost_picos"]) for g in report["groups"]] == [
        (_at(2026, 3, 1, 1), "b", 300),
        (_at(2026, 3, 1, 1), "a", 100),
        (_at(2026, 3, 1, 2), "a", 50),
        (_at(2026, 3, 1, 23), "a", 7),
    ]


async def test_weekly_buckets_start_on_monday_and_monthly_on_the_first(
    api: Api, timeline: list[dict[str, Any]]
) -> None:
    weekly = await _spend(api, interval="week")
    assert _buckets(weekly) == {
        (_at(2026, 2, 23), None): 19 + 100 + 300 + 50 + 7,  # Sunday 1 March is in that week
        (_at(2026, 3, 2), None): 11,
        (_at(2026, 3, 9), None): 13,
        (_at(2026, 3, 30), None): 17,
    }
    monthly = await _spend(api, interval="month")
    assert _buckets(monthly) == {
        (_at(2026, 2, 1), None): 19,
        (_at(2026, 3, 1), None): 100 + 300 + 50 + 7 + 11 + 13,
        (_at(2026, 4, 1), None): 17,
    }


async def test_since_is_inclusive_and_until_exclusive(
    api: Api, timeline: list[dict[str, Any]]
) -> None:
    report = await _spend(api, since=_at(2026, 3, 1, 2), until=_at(2026, 3, 2))
    assert report["totals"]["cost_picos"] == 50 + 7
    assert report["since"] == _at(2026, 3, 1, 2)


async def test_sums_past_the_64_bit_range_stay_exact(api: Api, services: Services) -> None:
    # Two calls of 5 million dollars each: their sum no longer fits a signed 64-bit integer.
    big = 5 * 10**18
    rows = [_row(services.root_org_id, T0, cost_picos=big + i, model_alias="x") for i in (1, 2)]
    await insert_rows(services, rows)
    report = await _spend(api, group_by="model")
    expected = 2 * big + 3
    assert expected > 2**63
    assert report["groups"][0]["cost_picos"] == expected
    assert report["totals"]["cost"] == "10000000.000000000003"


# --- pages of usage rows ----------------------------------------------------------------------


async def test_usage_pages_newest_first_without_gaps_or_repeats(
    api: Api, services: Services
) -> None:
    org = services.root_org_id
    # Two rows share a moment: the request id orders them, and the cursor must not skip one.
    rows = [_row(org, T0 + timedelta(minutes=m)) for m in (5, 1, 3, 3, 9, 0, 7)]
    await insert_rows(services, rows)
    expected = [
        r["request_id"]
        for r in sorted(rows, key=lambda r: (r["created_at"], r["request_id"]), reverse=True)
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await api.ok("GET", "/api/v1/usage", params=params)
        seen += [r["request_id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected


async def test_usage_filters_by_time_and_label(api: Api, services: Services) -> None:
    org = services.root_org_id
    early = _row(org, T0, labels='{"team": "red"}')
    late = _row(org, T0 + timedelta(hours=2), labels='{"team": "red", "tier": "gold"}')
    other = _row(org, T0 + timedelta(hours=1), labels='{"team": "blue"}')
    await insert_rows(services, [early, late, other])

    async def ids(**params: Any) -> list[str]:
        page = await api.ok("GET", "/api/v1/usage", params=params)
        return [r["request_id"] for r in page["data"]]

    assert await ids(label="team=red") == [late["request_id"], early["request_id"]]
    assert await ids(label="team=red,tier=gold") == [late["request_id"]]
    assert await ids(label=["team=red", "tier=gold"]) == [late["request_id"]]
    assert await ids(since=_at(2026, 3, 1, 1)) == [late["request_id"], other["request_id"]]
    assert await ids(until=_at(2026, 3, 1, 1)) == [early["request_id"]]


# --- isolation and access ---------------------------------------------------------------------


async def test_another_organizations_usage_never_appears(
    api: Api, client: httpx.AsyncClient, services: Services, fleet: Fleet
) -> None:
    created = await api.ok(
        "POST", "/api/v1/orgs", json={"name": "other-org", "owner_email": "o@example.com"}
    )
    other = Api(client, created["key"]["token"])
    session = await other.session(repository="acme/payments", labels={"use_case": "bugfix"})
    await _openai(client, session["key"]["token"], "gpt-4o")
    all_rows = await usage_rows(services)
    assert len(all_rows) == 7
    ours = [r for r in all_rows if r["org_id"] == services.root_org_id]
    theirs = [r for r in all_rows if r["org_id"] != services.root_org_id]
    assert len(theirs) == 1

    listed = await api.ok("GET", "/api/v1/usage", params={"limit": 500})
    assert {r["request_id"] for r in listed["data"]} == {r["request_id"] for r in ours}
    report = await _spend(api, group_by="repo,label:use_case")
    assert report["totals"] == _sums(ours)
    assert _groups(report, "repo", "label:use_case")[("acme/payments", "bugfix")]["calls"] == 3

    their_list = await other.ok("GET", "/api/v1/usage")
    assert [r["request_id"] for r in their_list["data"]] == [theirs[0]["request_id"]]
    assert (await _spend(other))["totals"] == _sums(theirs)
    # Naming our session from their organization finds nothing.
    s1 = fleet.sessions["s1"]["session"]["id"]
    assert (await _spend(other, session_id=s1))["totals"]["calls"] == 0


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("admin", True),
        ("finance", True),
        ("auditor", True),
        ("security", False),
        ("member", False),
    ],
)
async def test_finance_admin_and_auditors_read_spend_others_get_403(
    api: Api, services: Services, role: str, allowed: bool
) -> None:
    await insert_rows(services, [_row(services.root_org_id, T0)])
    _, token = await api.user_with_key(role)
    # A refused caller learns nothing from its parameters: bad ones still get the 403.
    bad = "/api/v1/spend?interval=fortnight&label=nope"
    expected = {"/api/v1/usage": 200, "/api/v1/spend?group_by=model": 200, bad: 422}
    for path, status in expected.items():
        response = await api.call("GET", path, token)
        assert response.status_code == (status if allowed else 403), response.text
        if not allowed:
            error = response.json()["error"]
            assert (error["code"], error["permission"]) == ("forbidden", "usage:read")


async def test_a_service_key_reads_spend_only_with_the_usage_read_scope(
    api: Api, services: Services
) -> None:
    await insert_rows(services, [_row(services.root_org_id, T0, cost_picos=42)])
    reader = await api.service_key(["usage:read"])
    writer = await api.service_key(["sessions:write"])
    assert (await _spend(api, reader))["totals"]["cost_picos"] == 42
    assert (await api.call("GET", "/api/v1/usage", reader)).status_code == 200
    assert (await api.call("GET", "/api/v1/spend", writer)).status_code == 403


async def test_a_session_key_cannot_read_its_own_spend(api: Api, fleet: Fleet) -> None:
    token = fleet.sessions["s1"]["key"]["token"]
    response = await api.call("GET", "/api/v1/spend", token)
    assert response.status_code == 403
    assert "session key" in response.json()["error"]["message"]


# --- bad input --------------------------------------------------------------------------------

BAD = [
    ("/api/v1/spend?group_by=colour", "group_by", "unknown field 'colour'"),
    ("/api/v1/spend?group_by=repo,,model", "group_by", "unknown field ''"),
    ("/api/v1/spend?group_by=user,team,repo,model,status", "group_by", "at most 4"),
    ("/api/v1/spend?group_by=repo,repository", "group_by", "twice"),
    ("/api/v1/spend?group_by=label:", "group_by", "label:<name>"),
    ("/api/v1/spend?group_by=label:Use%20Case", "group_by", "label:<name>"),
    ("/api/v1/spend?interval=fortnight", "interval", "hour"),
    ("/api/v1/spend?limit=0", "limit", "greater than or equal to 1"),
    ("/api/v1/spend?since=2026-03-02T00:00Z&until=2026-03-01T00:00Z", "until", "before since"),
    ("/api/v1/usage?since=2026-03-02T00:00Z&until=2026-03-01T00:00Z", "until", "before since"),
    ("/api/v1/spend?since=2026-03-01T00:00", "since", "timezone"),
    ("/api/v1/spend?label=use_case", "label", "key=value"),
    ("/api/v1/usage?label=Bad%20Key=x", "label", "key=value"),
    ("/api/v1/usage?label=a=1,b=", "label", "key=value"),
    ("/api/v1/usage?cursor=nope", "cursor", "pattern"),
    ("/api/v1/usage?cursor=999999999999999999.req_x", "cursor", "not a cursor"),
    ("/api/v1/usage?limit=501", "limit", "less than or equal to 500"),
]


@pytest.mark.parametrize(("path", "param", "message"), BAD, ids=[b[0] for b in BAD])
async def test_bad_spend_and_usage_queries_are_refused_naming_the_parameter(
    api: Api, services: Services, path: str, param: str, message: str
) -> None:
    await insert_rows(services, [_row(services.root_org_id, T0)])
    tables, audit = await store_snapshot(services.store), await audit_counts(services.store)
    response = await api.call("GET", path)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert param in error["message"]
    assert message.lower() in error["message"].lower(), error["message"]
    assert await store_snapshot(services.store) == tables
    assert await audit_counts(services.store) == audit
