"""``pilothouse budgets``: list, create, show, update and delete spend limits."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pilothouse.budgets.model import Window
from pilothouse.cli.client import JsonOption, KeyOption, LimitOption, UrlOption, connect, route
from pilothouse.cli.output import emit_record, fail, print_json, show_table, when
from pilothouse.cli.spend import money

app = typer.Typer(
    name="budgets",
    help="Limit spend per organization, team, user, project, label, ... and window.",
    no_args_is_help=True,
)


def _opt(name: str, metavar: str, help_text: str) -> Any:
    return typer.Option(name, metavar=metavar, help=help_text, show_default=False)


BudgetId = Annotated[str, typer.Argument(metavar="BUDGET_ID", help="The budget's id (bud_...).")]
Name = Annotated[
    str | None, _opt("--name", "NAME", "A name for people (default: scope and window).")
]
Limit = Annotated[str | None, _opt("--limit", "USD", "The limit in dollars, e.g. 500 or 0.50.")]
Thresholds = Annotated[
    str | None,
    _opt("--thresholds", "P,P,...", 'Percentages that alert, ascending ("" for none).'),
]
DowngradeAt = Annotated[
    int | None,
    _opt(
        "--downgrade-at",
        "PERCENT",
        "Downgrade calls once spend reaches this percentage of the limit (with --downgrade-to).",
    ),
]
DowngradeTo = Annotated[
    str | None, _opt("--downgrade-to", "ALIAS", "The model alias downgraded calls go to.")
]
DowngradeFrom = Annotated[
    str | None,
    _opt("--downgrade-from", "ALIAS", "Downgrade only calls for this alias (default: any)."),
]


def parse_scope(scope: str) -> tuple[str, str]:
    """``team:team_1`` -> ``("team", "team_1")``; ``org`` -> ``("org", "")``."""
    kind, _, value = scope.partition(":")
    return kind, value


def _thresholds(raw: str) -> list[int]:
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        fail(f"--thresholds must be whole percentages separated by commas, not {raw!r}", status=2)


def _downgrade(at: int | None, to: str | None, source: str | None) -> dict[str, Any] | None:
    if at is None and to is None and source is None:
        return None
    if at is None or to is None:
        fail("a downgrade needs both --downgrade-at and --downgrade-to", status=2)
    return {"at_percent": at, "to": to, "from": source}


def _signed(amount: str) -> str:
    """An exact dollar string for people, a negative one as ``-$1.50``."""
    return "-" + money(amount[1:]) if amount.startswith("-") else money(amount)


def _rule(downgrade: dict[str, Any] | None) -> str | None:
    if downgrade is None:
        return None
    asked = downgrade["from"] or "any model"
    return f"at {downgrade['at_percent']}%: {asked} -> {downgrade['to']}"


def budget_fields(budget: dict[str, Any]) -> dict[str, Any]:
    """The fields of a budget, and where it stands now, worth showing a person."""
    now = budget["current"]
    forecast = now["forecast"] or {}
    return {
        "id": budget["id"],
        "name": budget["name"],
        "scope": budget["scope"],
        "window": budget["window"],
        "limit": money(budget["limit_usd"]),
        "enforcement": budget["enforcement"],
        "thresholds": [f"{t}%" for t in budget["thresholds"]],
        "downgrade": _rule(budget["downgrade"]),
        "window start": when(now["window_start"]),
        "resets": when(now["resets_at"]),
        "spent": money(now["spent_usd"]),
        "reserved": money(now["reserved_usd"]),
        "remaining": _signed(now["remaining_usd"]),
        "used": f"{now['used_percent']}%",
        "calls": now["calls"],
        "per day": money(forecast["spend_per_day_usd"]) if forecast else None,
        "projected": money(forecast["projected_usd"]) if forecast else None,
        "created": when(budget["created_at"]),
    }


@app.command("list")
def list_budgets(
    scope: Annotated[
        str | None, _opt("--scope", "SCOPE", "Only budgets on this scope: org, team:ID, ...")
    ] = None,
    limit: LimitOption = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """List budgets of your organization, newest first, with this window's spend."""
    params: dict[str, str | None] = {}
    if scope is not None:
        params["scope_kind"], params["scope_value"] = parse_scope(scope)
    with connect(url, key) as api:
        page = api.pages("/budgets", params, limit)
    if json_out:
        print_json(page)
        return
    show_table(
        ["ID", "NAME", "SCOPE", "WINDOW", "LIMIT", "SPENT", "USED", "ENFORCEMENT", "RESETS"],
        (
            [
                b["id"],
                b["name"],
                b["scope"],
                b["window"],
                money(b["limit_usd"]),
                money(b["current"]["spent_usd"]),
                f"{b['current']['used_percent']}%",
                b["enforcement"],
                when(b["current"]["resets_at"]),
            ]
            for b in page["data"]
        ),
        title="budgets",
    )


@app.command("create")
def create(
    scope: Annotated[
        str,
        _opt(
            "--scope",
            "SCOPE",
            "What the budget limits: org, team:ID, user:ID, project:NAME, use_case:NAME,"
            " repository:NAME, session:ID, key:ID or label:NAME=VALUE.",
        ),
    ],
    window: Annotated[Window, typer.Option("--window", help="The period spend is counted over.")],
    limit: Annotated[str, _opt("--limit", "USD", "The limit in dollars, e.g. 500 or 0.50.")],
    soft: Annotated[
        bool, typer.Option("--soft/--hard", help="Only alert (soft) or refuse calls (hard).")
    ] = False,
    earlier: Annotated[
        bool,
        typer.Option(
            "--count-earlier-spend/--from-now",
            help="Count what the scope already spent in the current window (the default), or"
            " count from now.",
        ),
    ] = True,
    thresholds: Thresholds = None,
    downgrade_at: DowngradeAt = None,
    downgrade_to: DowngradeTo = None,
    downgrade_from: DowngradeFrom = None,
    name: Name = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a budget: one per scope and window.

    Needs the budgets:write permission (owner, admin, finance).
    """
    kind, value = parse_scope(scope)
    body: dict[str, Any] = {
        "scope_kind": kind,
        "scope_value": value,
        "window": window.value,
        "limit_usd": limit,
        "enforcement": "soft" if soft else "hard",
        "name": name,
        "downgrade": _downgrade(downgrade_at, downgrade_to, downgrade_from),
        "count_earlier_spend": earlier,
    }
    if thresholds is not None:
        body["thresholds"] = _thresholds(thresholds)
    with connect(url, key) as api:
        budget = api.post("/budgets", body)
    emit_record(budget, json_out, budget_fields, title="Budget created")


@app.command("show")
def show(
    budget_id: BudgetId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one budget: its limit, this window's spend, and the forecast."""
    with connect(url, key) as api:
        budget = api.get(route("budgets", budget_id))
    emit_record(budget, json_out, budget_fields)


@app.command("update")
def update(
    budget_id: BudgetId,
    limit: Limit = None,
    soft: Annotated[
        bool | None,
        typer.Option(
            "--soft/--hard", help="Only alert (soft) or refuse calls (hard).", show_default=False
        ),
    ] = None,
    thresholds: Thresholds = None,
    downgrade_at: DowngradeAt = None,
    downgrade_to: DowngradeTo = None,
    downgrade_from: DowngradeFrom = None,
    no_downgrade: Annotated[
        bool, typer.Option("--no-downgrade", help="Remove the budget's downgrade.")
    ] = False,
    name: Name = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Change a budget's limit, enforcement, thresholds, downgrade or name.

    The scope and window cannot change: delete the budget and create another.
    """
    body: dict[str, Any] = {"name": name, "limit_usd": limit}
    if soft is not None:
        body["enforcement"] = "soft" if soft else "hard"
    if thresholds is not None:
        body["thresholds"] = _thresholds(thresholds)
    body = {k: v for k, v in body.items() if v is not None}
    downgrade = _downgrade(downgrade_at, downgrade_to, downgrade_from)
    if downgrade is not None and no_downgrade:
        fail("give either --no-downgrade or a new downgrade, not both", status=2)
    if downgrade is not None or no_downgrade:
        body["downgrade"] = downgrade
    if not body:
        fail(
            "nothing to change: give --limit, --soft, --hard, --thresholds, --downgrade-at"
            " and --downgrade-to, --no-downgrade or --name",
            status=2,
        )
    with connect(url, key) as api:
        budget = api.patch(route("budgets", budget_id), body)
    emit_record(budget, json_out, budget_fields, title="Budget updated")


@app.command("delete")
def delete(
    budget_id: BudgetId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete a budget and its counters.

    The server answers with no body; with --json this prints {"id": ..., "deleted": true}.
    """
    with connect(url, key) as api:
        api.delete(route("budgets", budget_id))
    if json_out:
        print_json({"id": budget_id, "deleted": True})
        return
    typer.echo(f"deleted budget {budget_id}")
