"""The budgets admin API: create, list, show, change and delete budgets, on SQLite and PostgreSQL.

Where a budget stands (``current``) is checked against counter rows inserted here and a clock
set here, so spend, remaining, percentages and forecasts are compared with sums worked out by
hand, to the pico-dollar.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.budgets.model import Window, epoch, window_start
from pilothouse.budgets.tables import budget_counters
from pilothouse.budgets.views import usd_to_picos
from pilothouse.identity.principal import Principal
from pilothouse.identity.roles import Permission
from pilothouse.identity.tokens import KeyKind
from pilothouse.services import Services
from tests.api.conftest import audit_counts, store_snapshot
from tests.conftest import Api, MutableClock

PICOS = 10**12
BUDGETS = "/api/v1/budgets"
ORG_MONTH = {"scope_kind": "org", "window": "month", "limit_usd": "25"}


def _path(budget: dict[str, Any]) -> str:
    return f"{BUDGETS}/{budget['id']}"


async def _create(api: Api, token: str | None = None, **body: Any) -> dict[str, Any]:
    created: dict[str, Any] = await api.ok("POST", BUDGETS, token, json={**ORG_MONTH, **body})
    return created


async def _counter(
    services: Services, budget_id: str, start: int, spent: int, reserved: int = 0, calls: int = 0
) -> None:
    async with services.store.write() as conn:
        await conn.execute(
            insert(budget_counters).values(
                budget_id=budget_id,
                window_start=start,
                spent_picos=spent,
                reserved_picos=reserved,
                calls=calls,
            )
        )


async def _events(api: Api, action: str) -> list[dict[str, Any]]:
    page = await api.ok("GET", "/api/v1/audit/events", params={"action": action})
    events: list[dict[str, Any]] = page["data"]
    return events


# --- create, read, change, delete -----------------------------------------------------------


async def test_a_budget_is_created_shown_listed_changed_and_deleted(api: Api) -> None:
    team = await api.ok("POST", "/api/v1/teams", json={"name": "payments"})
    created = await _create(
        api,
        scope_kind="team",
        scope_value=team["id"],
        limit_usd="500",
        enforcement="soft",
        thresholds=[75, 90],
        downgrade={"at_percent": 80, "to": "cheap-model", "from": "big-model"},
    )
    assert created["id"].startswith("bud_")
    assert created["scope"] == f"team:{team['id']}"
    assert (created["scope_kind"], created["scope_value"]) == ("team", team["id"])
    assert created["name"] == f"team:{team['id']} month"
    assert created["limit_usd"] == "500.000000000000"
    assert created["enforcement"] == "soft"
    assert created["thresholds"] == [75, 90]
    assert created["downgrade"] == {"at_percent": 80, "to": "cheap-model", "from": "big-model"}
    assert await api.ok("GET", _path(created)) == created
    assert [b["id"] for b in (await api.ok("GET", BUDGETS))["data"]] == [created["id"]]

    changed = await api.ok(
        "PATCH",
        _path(created),
        json={"limit_usd": "750.5", "enforcement": "hard", "name": "payments monthly"},
    )
    assert changed["limit_usd"] == "750.500000000000"
    assert (changed["enforcement"], changed["name"]) == ("hard", "payments monthly")
    assert changed["thresholds"] == [75, 90]  # left out: unchanged
    assert changed["downgrade"] == created["downgrade"]
    assert changed["created_at"] == created["created_at"]
    assert await api.ok("GET", _path(created)) == changed

    cleared = await api.ok("PATCH", _path(created), json={"downgrade": None, "thresholds": []})
    assert (cleared["downgrade"], cleared["thresholds"]) == (None, [])

    assert (await api.call("DELETE", _path(created))).status_code == 204
    assert (await api.call("GET", _path(created))).status_code == 404
    assert (await api.ok("GET", BUDGETS))["data"] == []


async def test_an_org_budget_defaults_to_hard_with_thresholds_50_80_100(api: Api) -> None:
    created = await _create(api)
    assert created["scope"] == "org"
    assert created["scope_value"] == ""
    assert created["name"] == "org month"
    assert created["enforcement"] == "hard"
    assert created["thresholds"] == [50, 80, 100]
    assert created["downgrade"] is None


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("25", "25.000000000000"),
        ("0.50", "0.500000000000"),
        ("0.000000000001", "0.000000000001"),
        ("1.100000000000000", "1.100000000000"),
        ("9000000", "9000000.000000000000"),
        (12, "12.000000000000"),
        (0.1, "0.100000000000"),
        (1e-05, "0.000010000000"),
    ],
)
async def test_the_limit_is_stored_exactly_to_the_pico_dollar(
    api: Api, sent: Any, stored: str
) -> None:
    created = await _create(api, limit_usd=sent)
    assert created["limit_usd"] == stored
    assert created["current"]["remaining_usd"] == stored


def test_limits_become_exact_pico_dollars() -> None:
    assert usd_to_picos("0.1") + usd_to_picos("0.2") == usd_to_picos("0.3")
    assert usd_to_picos(0.1) == PICOS // 10
    assert usd_to_picos("8999999.999999999999") == 9_000_000 * PICOS - 1


async def test_list_filters_by_scope_kind_and_value(api: Api) -> None:
    org = await _create(api)
    alpha = await _create(api, scope_kind="project", scope_value="alpha")
    beta = await _create(api, scope_kind="project", scope_value="beta", window="day")
    label = await _create(api, scope_kind="label", scope_value="use_case=review")

    async def ids(**params: str) -> list[str]:
        page = await api.ok("GET", BUDGETS, params=params)
        return [b["id"] for b in page["data"]]

    assert await ids() == [label["id"], beta["id"], alpha["id"], org["id"]]
    assert await ids(scope_kind="project") == [beta["id"], alpha["id"]]
    assert await ids(scope_kind="project", scope_value="alpha") == [alpha["id"]]
    assert await ids(scope_kind="label", scope_value="use_case=review") == [label["id"]]
    assert await ids(scope_kind="org") == [org["id"]]
    assert await ids(scope_kind="team") == []


async def test_the_list_pages_newest_first(api: Api) -> None:
    made = [await _create(api, scope_kind="project", scope_value=f"p{i}") for i in range(5)]
    first = await api.ok("GET", BUDGETS, params={"limit": 2})
    assert [b["id"] for b in first["data"]] == [made[4]["id"], made[3]["id"]]
    rest = await api.ok("GET", BUDGETS, params={"limit": 10, "cursor": first["next_cursor"]})
    assert [b["id"] for b in rest["data"]] == [m["id"] for m in reversed(made[:3])]
    assert rest["next_cursor"] is None


async def test_a_second_budget_on_the_same_scope_and_window_is_a_conflict(
    api: Api, services: Services
) -> None:
    first = await _create(api, scope_kind="project", scope_value="alpha")
    tables, audit = await store_snapshot(services.store), await audit_counts(services.store)
    response = await api.call(
        "POST",
        BUDGETS,
        json={**ORG_MONTH, "scope_kind": "project", "scope_value": "alpha", "limit_usd": "9"},
    )
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["budget_id"] == first["id"]
    assert "project:alpha" in error["message"]
    assert await store_snapshot(services.store) == tables
    assert await audit_counts(services.store) == audit
    # Another window, or another organization, is another budget.
    await _create(api, scope_kind="project", scope_value="alpha", window="week")
    other = await api.ok("POST", "/api/v1/orgs", json={"name": "o2", "owner_email": "o@x.io"})
    await _create(api, other["key"]["token"], scope_kind="project", scope_value="alpha")


async def test_another_organizations_budget_is_not_found(api: Api, services: Services) -> None:
    other = await api.ok("POST", "/api/v1/orgs", json={"name": "o2", "owner_email": "o@x.io"})
    theirs = await _create(api, other["key"]["token"])
    tables = await store_snapshot(services.store)
    for method, body in (("GET", None), ("PATCH", {"limit_usd": "1"}), ("DELETE", None)):
        response = await api.call(method, _path(theirs), json=body)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert (await api.ok("GET", BUDGETS))["data"] == []
    assert await store_snapshot(services.store) == tables


# --- validation -----------------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown scope kind", {"scope_kind": "galaxy"}, "scope_kind", "enum"),
    ("org with a value", {"scope_value": "acme"}, "scope_value", "scope_value"),
    ("team without a value", {"scope_kind": "team"}, "scope_value", "scope_value"),
    (
        "project of blanks",
        {"scope_kind": "project", "scope_value": "   "},
        "scope_value",
        "scope_value",
    ),
    (
        "label without =",
        {"scope_kind": "label", "scope_value": "review"},
        "scope_value",
        "scope_value",
    ),
    (
        "label bad key",
        {"scope_kind": "label", "scope_value": "Use Case=x"},
        "scope_value",
        "scope_value",
    ),
    (
        "label no value",
        {"scope_kind": "label", "scope_value": "use_case="},
        "scope_value",
        "scope_value",
    ),
    (
        "scope value too long",
        {"scope_kind": "project", "scope_value": "p" * 401},
        "scope_value",
        "string_too_long",
    ),
    ("unknown window", {"window": "fortnight"}, "window", "enum"),
    ("no window", {"window": None}, "window", "enum"),
    ("zero limit", {"limit_usd": "0"}, "limit_usd", "usd_amount"),
    ("negative limit", {"limit_usd": -5}, "limit_usd", "usd_amount"),
    ("thirteen places", {"limit_usd": "0.0000000000001"}, "limit_usd", "usd_amount"),
    ("over the maximum", {"limit_usd": "9000000.000000000001"}, "limit_usd", "usd_amount"),
    ("not a number", {"limit_usd": "ten"}, "limit_usd", "usd_amount"),
    ("an exponent", {"limit_usd": "1e3"}, "limit_usd", "usd_amount"),
    ("a boolean", {"limit_usd": True}, "limit_usd", "usd_amount"),
    ("bad enforcement", {"enforcement": "strict"}, "enforcement", "enum"),
    ("descending thresholds", {"thresholds": [80, 50]}, "thresholds", "thresholds_order"),
    ("repeated threshold", {"thresholds": [50, 50]}, "thresholds", "thresholds_order"),
    ("threshold of 0", {"thresholds": [0, 50]}, "thresholds", "greater_than_equal"),
    ("threshold over 1000", {"thresholds": [1001]}, "thresholds", "less_than_equal"),
    ("eleven thresholds", {"thresholds": list(range(1, 12))}, "thresholds", "too_long"),
    (
        "downgrade at 0",
        {"downgrade": {"at_percent": 0, "to": "cheap"}},
        "downgrade",
        "greater_than_equal",
    ),
    ("downgrade to nothing", {"downgrade": {"at_percent": 80}}, "downgrade", "missing"),
    (
        "downgrade extra",
        {"downgrade": {"at_percent": 80, "to": "c", "x": 1}},
        "downgrade",
        "extra_forbidden",
    ),
    ("unknown field", {"colour": "red"}, "colour", "extra_forbidden"),
]


@pytest.mark.parametrize(
    ("case", "change", "field", "error_type"), INVALID, ids=[i[0] for i in INVALID]
)
async def test_an_invalid_budget_is_refused_with_422_naming_the_field_and_changes_nothing(
    api: Api, services: Services, case: str, change: dict[str, Any], field: str, error_type: str
) -> None:
    tables, audit = await store_snapshot(services.store), await audit_counts(services.store)
    response = await api.call("POST", BUDGETS, json={**ORG_MONTH, **change})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error_type in [e["type"] for e in error["errors"]], error
    (named,) = [e for e in error["errors"] if e["type"] == error_type]
    assert named["location"][:2] == ["body", field]
    assert field in error["message"], error["message"]
    assert await store_snapshot(services.store) == tables
    assert await audit_counts(services.store) == audit


async def test_a_team_or_user_scope_must_name_one_of_the_organization(
    api: Api, services: Services
) -> None:
    other = await api.ok("POST", "/api/v1/orgs", json={"name": "o2", "owner_email": "o@x.io"})
    their_team = await api.ok(
        "POST", "/api/v1/teams", other["key"]["token"], json={"name": "theirs"}
    )
    tables, audit = await store_snapshot(services.store), await audit_counts(services.store)
    for kind, value in (
        ("team", "team_missing"),
        ("team", their_team["id"]),
        ("user", "usr_missing"),
        ("user", other["owner"]["id"]),
    ):
        response = await api.call(
            "POST", BUDGETS, json={**ORG_MONTH, "scope_kind": kind, "scope_value": value}
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "bad_request"
        assert value in error["message"] and kind in error["message"]
        assert error["errors"][0]["type"] == f"unknown_{kind}"
    assert await store_snapshot(services.store) == tables
    assert await audit_counts(services.store) == audit
    me = await api.ok("GET", "/api/v1/whoami")
    mine = await _create(api, scope_kind="user", scope_value=me["user_id"])
    assert mine["scope"] == f"user:{me['user_id']}"


@pytest.mark.parametrize(
    ("change", "error_type"),
    [
        ({"window": "day"}, "extra_forbidden"),
        ({"scope_kind": "team"}, "extra_forbidden"),
        ({"scope_value": "x"}, "extra_forbidden"),
        ({"limit_usd": "0"}, "usd_amount"),
        ({"thresholds": [90, 10]}, "thresholds_order"),
        ({"enforcement": "maybe"}, "enum"),
        ({"downgrade": {"at_percent": 2000, "to": "x"}}, "less_than_equal"),
    ],
)
async def test_an_invalid_change_is_refused_and_changes_nothing(
    api: Api, services: Services, change: dict[str, Any], error_type: str
) -> None:
    budget = await _create(api)
    tables, audit = await store_snapshot(services.store), await audit_counts(services.store)
    response = await api.call("PATCH", _path(budget), json=change)
    assert response.status_code == 422, response.text
    assert error_type in [e["type"] for e in response.json()["error"]["errors"]]
    assert await store_snapshot(services.store) == tables
    assert await audit_counts(services.store) == audit


# --- who may ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "reads", "writes"),
    [
        ("admin", True, True),
        ("finance", True, True),
        ("auditor", True, False),
        ("security", False, False),
        ("member", False, False),
    ],
)
async def test_finance_and_admins_manage_budgets_auditors_read_them_others_get_403(
    api: Api, services: Services, role: str, reads: bool, writes: bool
) -> None:
    _, token = await api.user_with_key(role)
    existing = await _create(api)
    read = await api.call("GET", BUDGETS, token)
    shown = await api.call("GET", _path(existing), token)
    assert (read.status_code, shown.status_code) == ((200, 200) if reads else (403, 403))
    tables = await store_snapshot(services.store)
    calls = [
        ("POST", BUDGETS, {**ORG_MONTH, "window": "day"}, 201),
        ("PATCH", _path(existing), {"limit_usd": "30"}, 200),
        ("DELETE", _path(existing), None, 204),
    ]
    for method, path, body, status in calls:
        response = await api.call(method, path, token, json=body)
        assert response.status_code == (status if writes else 403), (method, response.text)
        if not writes:
            error = response.json()["error"]
            assert (error["code"], error["permission"]) == ("forbidden", "budgets:write")
    if not writes:
        assert await store_snapshot(services.store) == tables


async def test_a_session_key_can_neither_read_nor_raise_a_budget(
    api: Api, services: Services
) -> None:
    opened = await api.session()
    token = opened["key"]["token"]
    session_id = opened["session"]["id"]
    mine = await _create(api, scope_kind="session", scope_value=session_id, limit_usd="1")
    tables = await store_snapshot(services.store)
    calls = [
        ("GET", BUDGETS, None),
        ("GET", _path(mine), None),
        ("POST", BUDGETS, {**ORG_MONTH, "scope_kind": "session", "scope_value": session_id}),
        ("PATCH", _path(mine), {"limit_usd": "1000000"}),
        ("DELETE", _path(mine), None),
    ]
    for method, path, body in calls:
        response = await api.call(method, path, token, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert "session key" in response.json()["error"]["message"]
    assert await store_snapshot(services.store) == tables
    assert (await api.ok("GET", _path(mine)))["limit_usd"] == "1.000000000000"


def _service(*scopes: str) -> Principal:
    return Principal("org_1", "key_1", KeyKind.SERVICE, "phs_x", scopes=frozenset(scopes))


def test_service_key_scopes_grant_reading_or_managing_budgets() -> None:
    reader, manager, other = _service("budgets:read"), _service("budgets:write"), _service()
    assert reader.can(Permission.BUDGETS_READ) and not reader.can(Permission.BUDGETS_WRITE)
    assert manager.can(Permission.BUDGETS_READ) and manager.can(Permission.BUDGETS_WRITE)
    assert not other.can(Permission.BUDGETS_READ)
    session = Principal("org_1", "key_2", KeyKind.SESSION, "pha_x", session_id="ses_1")
    assert not session.can(Permission.BUDGETS_WRITE)


# --- audit and cache invalidation ----------------------------------------------------------


async def test_each_change_is_an_audit_event_with_its_details(api: Api) -> None:
    budget = await _create(api, scope_kind="label", scope_value="use_case=review")
    (created,) = await _events(api, "budget.created")
    assert (created["target"]["type"], created["target"]["id"]) == ("budget", budget["id"])
    assert created["details"] == {
        "name": "label:use_case=review month",
        "scope": "label:use_case=review",
        "window": "month",
        "limit_usd": "25.000000000000",
        "enforcement": "hard",
        "earlier_spend_usd": "0.000000000000",  # what the scope spent in the window before
        "earlier_calls": 0,
    }
    await api.ok("PATCH", _path(budget), json={"limit_usd": "40", "thresholds": [90]})
    (updated,) = await _events(api, "budget.updated")
    assert updated["details"] == {
        "scope": "label:use_case=review",
        "window": "month",
        "changed": ["limit_usd", "thresholds"],
        "old_limit_usd": "25.000000000000",
        "limit_usd": "40.000000000000",
        "enforcement": "hard",
        "thresholds": [90],
    }
    await api.ok("PATCH", _path(budget), json={"limit_usd": "40.000", "thresholds": [90]})
    assert len(await _events(api, "budget.updated")) == 1, "a change to nothing is not audited"
    assert (await api.call("DELETE", _path(budget))).status_code == 204
    (deleted,) = await _events(api, "budget.deleted")
    assert deleted["target"]["id"] == budget["id"]
    assert deleted["details"]["limit_usd"] == "40.000000000000"
    assert deleted["details"]["scope"] == "label:use_case=review"


async def test_each_change_invalidates_the_organizations_budgets(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[tuple[str, str]] = []
    delivered: list[tuple[str, str]] = []
    publish = services.invalidations.publish

    async def spy(conn: AsyncConnection, kind: str, ref: str) -> None:
        published.append((kind, ref))
        await publish(conn, kind, ref)

    monkeypatch.setattr(services.invalidations, "publish", spy)
    services.invalidations.subscribe(lambda kind, ref: delivered.append((kind, ref)))
    change = ("budget", services.root_org_id)
    budget = await _create(api)
    assert published == [change]
    # Delivered on this node as soon as the change committed (PostgreSQL also echoes it later).
    assert delivered[0] == change
    await api.ok("PATCH", _path(budget), json={"enforcement": "soft"})
    assert published == [change] * 2
    await api.call("POST", BUDGETS, json=ORG_MONTH)  # refused as a duplicate: no change
    await api.ok("PATCH", _path(budget), json={"enforcement": "soft"})  # already soft
    assert published == [change] * 2
    await api.call("DELETE", _path(budget))
    assert published == [change] * 3
    assert set(delivered) == {change}


# --- where a budget stands now ------------------------------------------------------------

MID_MARCH = datetime(2027, 3, 11, 12, 0, tzinfo=UTC)  # 10.5 days into a 31-day month


async def test_current_spend_comes_from_this_windows_counter_with_a_forecast(
    api: Api, services: Services, clock: MutableClock
) -> None:
    clock.moment = MID_MARCH
    budget = await _create(api, limit_usd="25")
    march = epoch(datetime(2027, 3, 1, tzinfo=UTC))
    february = epoch(datetime(2027, 2, 1, tzinfo=UTC))
    await _counter(services, budget["id"], february, spent=99 * PICOS, calls=500)
    await _counter(
        services, budget["id"], march, spent=10_500_000_000_000, reserved=2 * PICOS, calls=7
    )
    current = (await api.ok("GET", _path(budget)))["current"]
    assert current == {
        "window_start": "2027-03-01T00:00:00Z",
        "resets_at": "2027-04-01T00:00:00Z",
        "spent_usd": "10.500000000000",
        "reserved_usd": "2.000000000000",
        "remaining_usd": "12.500000000000",
        "used_percent": "42.00",
        "calls": 7,
        "forecast": {"spend_per_day_usd": "1.000000000000", "projected_usd": "31.000000000000"},
    }
    listed = (await api.ok("GET", BUDGETS))["data"][0]["current"]
    assert listed == current

    clock.moment = datetime(2027, 4, 2, tzinfo=UTC)  # a new window: nothing spent in it yet
    april = (await api.ok("GET", _path(budget)))["current"]
    assert april["window_start"] == "2027-04-01T00:00:00Z"
    assert april["resets_at"] == "2027-05-01T00:00:00Z"
    assert (april["spent_usd"], april["calls"], april["used_percent"]) == (
        "0.000000000000",
        0,
        "0.00",
    )
    assert april["remaining_usd"] == "25.000000000000"
    assert april["forecast"] == {
        "spend_per_day_usd": "0.000000000000",
        "projected_usd": "0.000000000000",
    }


async def test_an_overspent_budget_shows_negative_remaining_and_over_100_percent(
    api: Api, services: Services, clock: MutableClock
) -> None:
    clock.moment = datetime(2027, 3, 10, 6, 0, tzinfo=UTC)  # a Wednesday
    budget = await _create(api, window="week", limit_usd="3")
    monday = epoch(datetime(2027, 3, 8, tzinfo=UTC))
    await _counter(services, budget["id"], monday, spent=4 * PICOS + 1, reserved=PICOS // 2)
    current = (await api.ok("GET", _path(budget)))["current"]
    assert current["window_start"] == "2027-03-08T00:00:00Z"
    assert current["resets_at"] == "2027-03-15T00:00:00Z"
    assert current["remaining_usd"] == "-1.500000000001"
    assert current["used_percent"] == "133.33"
    # 2.25 days elapsed of 7: 4.000000000001 / 2.25 a day, x 7 / 2.25 by the end (rounded down).
    assert current["forecast"] == {
        "spend_per_day_usd": "1.777777777778",
        "projected_usd": "12.444444444447",
    }


async def test_a_total_budget_counts_from_the_epoch_and_never_resets(
    api: Api, services: Services, clock: MutableClock
) -> None:
    clock.moment = MID_MARCH
    budget = await _create(api, window="total", limit_usd="100")
    await _counter(services, budget["id"], 0, spent=PICOS // 3, calls=2)
    current = (await api.ok("GET", _path(budget)))["current"]
    assert current["window_start"] == "1970-01-01T00:00:00Z"
    assert current["resets_at"] is None
    assert current["spent_usd"] == "0.333333333333"
    assert current["used_percent"] == "0.33"
    assert current["calls"] == 2
    assert current["forecast"] is None


async def test_no_forecast_in_a_windows_first_minute(
    api: Api, services: Services, clock: MutableClock
) -> None:
    clock.moment = datetime(2027, 3, 11, 0, 0, 59, tzinfo=UTC)
    budget = await _create(api, window="day", limit_usd="10")
    start = epoch(window_start(Window.DAY, clock.moment))
    await _counter(services, budget["id"], start, spent=PICOS)
    assert (await api.ok("GET", _path(budget)))["current"]["forecast"] is None
    clock.advance(seconds=1)
    forecast = (await api.ok("GET", _path(budget)))["current"]["forecast"]
    assert forecast == {
        "spend_per_day_usd": "1440.000000000000",
        "projected_usd": "1440.000000000000",
    }
    clock.moment += timedelta(hours=11, minutes=59)  # noon: half the day
    forecast = (await api.ok("GET", _path(budget)))["current"]["forecast"]
    assert forecast == {"spend_per_day_usd": "2.000000000000", "projected_usd": "2.000000000000"}


async def test_the_routes_are_documented_under_the_budgets_tag(api: Api) -> None:
    schema = (await api.client.get("/api/openapi.json")).json()
    operations = {
        (method.upper(), path): op
        for path, ops in schema["paths"].items()
        if path.startswith(BUDGETS)
        for method, op in ops.items()
    }
    assert set(operations) == {
        ("GET", BUDGETS),
        ("POST", BUDGETS),
        ("GET", f"{BUDGETS}/{{budget_id}}"),
        ("PATCH", f"{BUDGETS}/{{budget_id}}"),
        ("DELETE", f"{BUDGETS}/{{budget_id}}"),
    }
    assert all(op["tags"] == ["budgets"] for op in operations.values())
