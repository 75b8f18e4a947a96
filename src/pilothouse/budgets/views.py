"""Budgets as the API reads and writes them: request bodies (money parsed exactly), and the
view of a budget with where it stands now (``current``: computed from the clock and the counter
of the window the clock is in; no counter means nothing was spent in it yet).

A limit arrives as dollars (``"25"``, ``"0.50"``; a JSON number is read through its shortest
decimal form, so send a string for more than 15 significant digits) and is stored as integer
pico-dollars; every amount goes back out as the API's exact dollar string.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from pilothouse.api.types import Body, Name
from pilothouse.budgets.model import (
    Budget,
    Enforcement,
    ScopeKind,
    Window,
    budget_from_row,
    window_end,
    window_start,
)
from pilothouse.clock import to_micros
from pilothouse.gateway.prices import PICOS_PER_DOLLAR
from pilothouse.gateway.usage_rows import dollars
from pilothouse.identity.labels import LABEL_KEY_RE, LABEL_VALUE_MAX

MAX_LIMIT_USD = 9_000_000
"""The largest limit: counters are signed 64-bit pico-dollars (about $9.2 million)."""
MAX_THRESHOLDS = 10
DEFAULT_THRESHOLDS = (50, 80, 100)
MIN_FORECAST_SECONDS = 60
"""Less of the window than this has passed: too little to project from."""
SCOPE_VALUE_MAX = 400
_USD_TEXT = re.compile(r"^-?\d+(\.\d+)?$")
_USD_HELP = 'a decimal amount of dollars such as "25" or "0.50"'

# --- request fields -------------------------------------------------------------------------


def _invalid(kind: str, message: str) -> PydanticCustomError:
    # A pydantic error whose type is a stable code and whose message is shown as written.
    return PydanticCustomError(kind, message)


def _usd_text(value: Any) -> str:
    """The input as plain decimal text (no exponent), or an error for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return format(Decimal(repr(value)), "f")  # both steps exact: 1e-05 -> 0.00001
    if isinstance(value, str) and len(value) <= 40 and _USD_TEXT.match(value.strip()):
        return value.strip()
    raise _invalid("usd_amount", f"must be {_USD_HELP}")


def usd_to_picos(value: Any) -> int:
    """A limit in dollars (text or JSON number) as exact pico-dollars: more than 0, at most
    twelve decimal places and ``MAX_LIMIT_USD``."""
    text = _usd_text(value)
    if text.startswith("-"):
        raise _invalid("usd_amount", "must be more than 0")
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    if len(fraction) > 12:
        raise _invalid("usd_amount", "must have at most 12 decimal places (one pico-dollar)")
    picos = int(whole) * PICOS_PER_DOLLAR + int(fraction.ljust(12, "0"))
    if picos <= 0:
        raise _invalid("usd_amount", "must be more than 0")
    if picos > MAX_LIMIT_USD * PICOS_PER_DOLLAR:
        raise _invalid("usd_amount", f"must be at most {MAX_LIMIT_USD}")
    return picos


UsdLimit = Annotated[
    int,
    PlainValidator(usd_to_picos),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?$", "maxLength": 40},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "Dollars, more than 0, at most 12 decimal places and"
            f" {MAX_LIMIT_USD}; a string is exact.",
            "examples": ["25", "0.50"],
        },
        mode="validation",
    ),
]
"""The limit as sent in dollars; the validated value is exact pico-dollars."""


def _ascending(values: list[int]) -> list[int]:
    if any(b <= a for a, b in pairwise(values)):
        raise _invalid("thresholds_order", "must be strictly ascending, each given once")
    return values


Percent = Annotated[int, Field(ge=1, le=1000)]
Thresholds = Annotated[list[Percent], Field(max_length=MAX_THRESHOLDS), AfterValidator(_ascending)]
ScopeValue = Annotated[
    str, StringConstraints(max_length=SCOPE_VALUE_MAX, strip_whitespace=True, pattern=r"^[^\x00]*$")
]


class DowngradeRule(Body):
    """Above ``at_percent`` of the limit, calls for ``from`` (any model when null) go to ``to``."""

    at_percent: Percent
    to: Name = Field(description="The model alias calls are sent to instead.")
    from_: Name | None = Field(
        default=None, alias="from", description="The alias downgraded; null: every alias."
    )


def check_scope_value(kind: ScopeKind, value: str) -> str:
    """The value a scope of ``kind`` is stored with: "" for org, ``name=value`` for a label."""
    if kind is ScopeKind.ORG:
        if value:
            raise _invalid("scope_value", "an org budget takes no scope_value; leave it out")
        return ""
    if not value:
        raise _invalid(
            "scope_value", f"a {kind.value} budget needs a scope_value naming the {kind.value}"
        )
    if kind is ScopeKind.LABEL:
        name, equals, label = value.partition("=")
        if not equals or not LABEL_KEY_RE.match(name) or not 0 < len(label) <= LABEL_VALUE_MAX:
            raise _invalid(
                "scope_value",
                "a label budget's scope_value must be name=value with a label key (lower case,"
                f" digits, _ . -) and a value of 1 to {LABEL_VALUE_MAX} characters",
            )
    return value


class BudgetCreate(Body):
    """A new budget."""

    name: Name | None = Field(
        default=None, description='Default: the scope and window, "org month".'
    )
    scope_kind: ScopeKind
    scope_value: ScopeValue = Field(
        default="",
        validate_default=True,
        description='The team or user id, project, ..., "name=value" for a label; none for org.',
    )
    window: Window
    limit_usd: UsdLimit
    enforcement: Enforcement = Enforcement.HARD
    thresholds: Thresholds = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    downgrade: DowngradeRule | None = None
    count_earlier_spend: bool = Field(
        default=True,
        description="Whether the calls its scope made in the current window before the budget"
        " existed count toward it (their usage rows, summed when it is made); false: it counts"
        " from now.",
    )

    @field_validator("scope_value")
    @classmethod
    def _fits_kind(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("scope_kind")
        return check_scope_value(kind, value) if isinstance(kind, ScopeKind) else value


class BudgetUpdate(Body):
    """Fields of a budget that may change (not its scope or window); omitted fields stay.
    ``downgrade: null`` removes the downgrade."""

    name: Name | None = None
    limit_usd: UsdLimit | None = None
    enforcement: Enforcement | None = None
    thresholds: Thresholds | None = None
    downgrade: DowngradeRule | None = None


# --- views ----------------------------------------------------------------------------------


class BudgetForecast(BaseModel):
    """Where spend is heading at the rate of the window's elapsed part."""

    spend_per_day_usd: str = Field(description="Spent so far per day elapsed, exact dollars.")
    projected_usd: str = Field(
        description="Spent so far scaled to the whole window (spent x length / elapsed)."
    )


class BudgetCurrent(BaseModel):
    """Where a budget stands in the window the clock is in."""

    window_start: datetime = Field(description="The window's first instant (1970 for total).")
    resets_at: datetime | None = Field(description="When the next window starts; null: total.")
    spent_usd: str
    reserved_usd: str = Field(description="Held by calls in flight.")
    remaining_usd: str = Field(description="limit - spent - reserved; negative when over.")
    used_percent: str = Field(
        description="spent / limit x 100, rounded down to 2 places: 100.00 means reached."
    )
    calls: int
    forecast: BudgetForecast | None = Field(
        description="Null for a total budget and in a window's first minute."
    )


class BudgetView(BaseModel):
    """A budget as the API shows it."""

    id: str
    name: str
    scope: str = Field(description='"team:team_01...", "label:use_case=review", "org".')
    scope_kind: ScopeKind
    scope_value: str
    window: Window
    limit_usd: str = Field(description="Exact dollars, twelve decimal places.")
    enforcement: Enforcement
    thresholds: list[int]
    downgrade: DowngradeRule | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    current: BudgetCurrent


def _percent(part: int, whole: int) -> str:
    """``part / whole x 100`` rounded toward zero to hundredths, exactly."""
    hundredths = abs(part) * 10_000 // whole
    sign = "-" if part < 0 and hundredths else ""
    return f"{sign}{hundredths // 100}.{hundredths % 100:02d}"


def current_of(budget: Budget, counter: Any, now: datetime) -> BudgetCurrent:
    """Where ``budget`` stands at ``now``, from its counter row for that window (None: empty)."""
    start, end = window_start(budget.window, now), window_end(budget.window, now)
    spent = int(counter["spent_picos"]) if counter is not None else 0
    reserved = int(counter["reserved_picos"]) if counter is not None else 0
    forecast = None
    elapsed = to_micros(now) - to_micros(start)
    if end is not None and elapsed >= MIN_FORECAST_SECONDS * 1_000_000:
        length = to_micros(end) - to_micros(start)
        forecast = BudgetForecast(
            spend_per_day_usd=dollars(spent * 86_400_000_000 // elapsed),
            projected_usd=dollars(spent * length // elapsed),
        )
    return BudgetCurrent(
        window_start=start,
        resets_at=end,
        spent_usd=dollars(spent),
        reserved_usd=dollars(reserved),
        remaining_usd=dollars(budget.limit_picos - spent - reserved),
        used_percent=_percent(spent, budget.limit_picos),
        calls=int(counter["calls"]) if counter is not None else 0,
        forecast=forecast,
    )


def view_of(row: Any, counter: Any, now: datetime) -> BudgetView:
    """A ``budgets`` row and its current counter row as the API shows them."""
    budget = budget_from_row(row)
    rule = budget.downgrade
    downgrade = (
        DowngradeRule.model_validate(
            {"at_percent": rule.at_percent, "to": rule.target, "from": rule.source}
        )
        if rule is not None
        else None
    )
    return BudgetView(
        id=budget.id,
        name=budget.name,
        scope=budget.scope,
        scope_kind=budget.scope_kind,
        scope_value=budget.scope_value,
        window=budget.window,
        limit_usd=dollars(budget.limit_picos),
        enforcement=budget.enforcement,
        thresholds=list(budget.thresholds),
        downgrade=downgrade,
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        current=current_of(budget, counter, now),
    )


# --- reading --------------------------------------------------------------------------------
