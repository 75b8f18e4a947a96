"""Deciding reservations: which calls of a batch the budgets and rate limits admit.

A call is admitted only if every rate limit and hard budget it counts against has room for it;
a refused call changes nothing. The calls of a batch are decided in arrival order, each against
the counters as the calls before it left them. ``budgets/writer.py`` reads and locks the
counters, calls ``decide``, and writes the outcome in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pilothouse.budgets.limits import LimitHit, LimitKind
from pilothouse.budgets.model import Budget, Enforcement, window_end
from pilothouse.errors import BudgetExceeded, PilothouseError, RateLimited
from pilothouse.gateway.usage_rows import dollars

if TYPE_CHECKING:
    from pilothouse.budgets.contexts import Context

PICOS_PER_USD = 10**12
BudgetKey = tuple[str, int]  # (budget id, window start)
# The budget_reservations table's columns, in its order: a reservation row is made for every
# budgeted call, as a tuple in this order (``budgets/writer.py`` checks it against the table).
RESERVATION_COLUMNS = (
    "request_id",
    "amount_picos",
    "context_id",
    "rate_charges",
    "created_us",
    "expires_at",
)
Counter = list[int]  # a budget counter as read and changed: [spent, reserved, calls]


@dataclass(frozen=True, slots=True)
class RateCharge:
    """One rate-limit counter a call holds: its key, what it took, and what it counts."""

    key: str
    taken: int
    kind: str

    def settled(self, tokens: int) -> int:
        """What settling the call changes the counter by: a concurrent slot is given back; a
        minute's tokens go from the reserved estimate to the call's actual count."""
        if self.kind == LimitKind.CONCURRENT:
            return -1
        return tokens - self.taken if self.kind == LimitKind.TPM else 0


@dataclass(frozen=True, slots=True)
class LimitState:
    """A rate limit as it stood once the call was admitted (for the ``x-ratelimit-*`` headers)."""

    kind: str
    limit: int
    count: int
    reset_at: int | None


@dataclass(slots=True)  # not frozen: made for every budgeted call, and frozen costs 4x that
class Reservation:
    """What was reserved for one call, to settle when it ends (its limits set once, when it is
    admitted; nothing else changed once made). A call's is its ``Ask`` itself: one object a
    call, not two."""

    # Every field positional, none defaulted: an ``Ask``, made for every budgeted call, is made
    # positionally (keywords cost twice as much).
    request_id: str
    amount_picos: int
    charges: tuple[BudgetKey, ...]
    rate_charges: tuple[RateCharge, ...]
    limits: tuple[LimitState, ...]
    # Whether the call holds a slot of a concurrent-calls limit, which its settlement gives
    # back (``holds_slot(rate_charges)``: a field, not a property, read once for every call).
    holds_slot: bool


def holds_slot(rate_charges: Sequence[RateCharge]) -> bool:
    """Whether a call charged ``rate_charges`` holds a slot of a concurrent-calls limit."""
    return any(c.kind == LimitKind.CONCURRENT for c in rate_charges)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a budget refused a call: everything the agent is told."""

    budget: Budget
    spent_picos: int
    reserved_picos: int
    requested_picos: int
    resets_at: datetime | None

    def details(self) -> dict[str, Any]:
        """The fields added to the error body (amounts as the API's exact dollar strings)."""
        return {
            "budget_id": self.budget.id,
            "scope": self.budget.scope,
            "window": self.budget.window.value,
            "limit_usd": dollars(self.budget.limit_picos),
            "spent_usd": dollars(self.spent_picos),
            "reserved_usd": dollars(self.reserved_picos),
            "requested_usd": dollars(self.requested_picos),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }

    def message(self) -> str:
        """One sentence naming the budget, the numbers and the reset."""
        b = self.budget
        when = (
            f"; the {b.window.value} window resets at {self.resets_at.isoformat()}"
            if (self.resets_at)
            else "; it is a total budget and does not reset"
        )
        return (
            f"budget {b.name!r} ({b.scope}, {b.window.value}) would be exceeded: limit"
            f" ${usd(b.limit_picos)}, spent ${usd(self.spent_picos)}, reserved by calls in"
            f" flight ${usd(self.reserved_picos)}, this call may cost up to"
            f" ${usd(self.requested_picos)}{when}"
        )


def usd(picos: int) -> str:
    """Exact dollars for people to read: ``1.5`` for 1.5e12 picos (data fields use the API's
    twelve-place ``dollars``)."""
    sign = "-" if picos < 0 else ""
    whole, frac = divmod(abs(picos), PICOS_PER_USD)
    text = f"{frac:012d}".rstrip("0")
    return f"{sign}{whole}.{text}" if text else f"{sign}{whole}"


@dataclass(slots=True)
class RateAsk:
    """One rate-limit counter a call asks a slot of."""

    hit: LimitHit
    key: str
    amount: int
    expires_at: int | None
    reset_at: int | None


@dataclass(slots=True)
class Ask(Reservation):
    """One call's reservation request and what the batch decided; once admitted, the call's
    reservation (what it settles or releases)."""

    budgets: list[tuple[Budget, BudgetKey]]
    rates: Sequence[RateAsk]
    # The budget_reservations row: a tuple in RESERVATION_COLUMNS' order (SQLite), or a JSON
    # object (PostgreSQL: ``Ledger.ask``).
    row: tuple[Any, ...] | str
    now: datetime
    context: Context  # which the tick writes if the writer has not yet
    counts: Sequence[int] = ()  # each rate counter once admitted (``decide`` sets a list)
    refusal: PilothouseError | None = None


BudgetsCharged = list[tuple[Budget, BudgetKey]]
"""A call's budgets, each with the counter it goes to (``Ledger._charges``)."""


def summed(asks: Sequence[Ask]) -> list[tuple[BudgetsCharged, int]]:
    """The amounts ``asks`` reserve, summed over the calls charged to the same budgets (they
    share one list: ``Ledger._charges`` makes it once per set of budgets and day)."""
    totals: dict[int, tuple[BudgetsCharged, list[int]]] = {}  # by id(budgets)
    for ask in asks:
        same = totals.get(id(ask.budgets))
        if same is None:
            same = totals[id(ask.budgets)] = (ask.budgets, [0])
        same[1][0] += ask.amount_picos
    return [(charged, total) for charged, (total,) in totals.values()]


def decide(asks: Sequence[Ask], spent: dict[BudgetKey, Counter], rates: dict[str, int]) -> None:
    """Admit or refuse each ask in order, updating ``spent`` (each budget counter) and
    ``rates`` (each rate counter's count) for every admitted one."""
    if _all_fit(asks, spent):
        return
    for ask in asks:
        ask.counts = counts = []  # a transaction run again decides again
        ask.refusal = refusal = _refusal(ask, spent, rates)
        if refusal is not None:
            continue
        for rate in ask.rates:
            rates[rate.key] += rate.amount
            counts.append(rates[rate.key])
        amount = ask.amount_picos
        for _, key in ask.budgets:
            counter = spent.get(key)
            if counter is not None:  # None: deleted since the cache read it
                counter[1] += amount


def _all_fit(asks: Sequence[Ask], spent: dict[BudgetKey, Counter]) -> bool:
    """Admit every ask at once if none takes a rate limit's slot and every hard budget has
    room for all of them together: what deciding them one by one gives then (no amount is
    negative), for a sum per set of budgets instead of a check per budget of every call."""
    if any(ask.rates for ask in asks):
        return False
    totals = summed(asks)
    needed: dict[BudgetKey, int] = {}
    for charged, total in totals:
        for budget, key in charged:
            needed[key] = needed.get(key, 0) + total
            counter = spent.get(key)
            if (  # None: deleted since the cache read it
                counter is not None
                and budget.enforcement is Enforcement.HARD
                and counter[0] + counter[1] + needed[key] > budget.limit_picos
            ):
                return False
    for key, amount in needed.items():
        counter = spent.get(key)
        if counter is not None:
            counter[1] += amount
    for ask in asks:
        ask.refusal = None  # a transaction run again decides again
    return True


def _refusal(
    ask: Ask, spent: dict[BudgetKey, Counter], rates: dict[str, int]
) -> PilothouseError | None:
    for rate in ask.rates:
        used = rates[rate.key]
        if used + rate.amount > rate.hit.limit:
            return rate_limited(rate, used, ask.now)
    amount = ask.amount_picos
    for budget, key in ask.budgets:
        counter = spent.get(key)
        if counter is None or budget.enforcement is not Enforcement.HARD:
            continue  # None: deleted since the cache read it
        done, held = counter[0], counter[1]
        if done + held + amount > budget.limit_picos:
            refusal = Refusal(budget, done, held, amount, window_end(budget.window, ask.now))
            return BudgetExceeded(refusal.message(), **refusal.details())
    return None


def rate_limited(rate: RateAsk, used: int, now: datetime) -> RateLimited:
    """The refusal of a call by the rate limit ``rate`` with ``used`` already taken."""
    hit, reset = rate.hit, rate.reset_at
    wait = max(1.0, reset - now.timestamp()) if reset is not None else 1.0
    what = {
        LimitKind.RPM: "calls a minute",
        LimitKind.TPM: "tokens a minute",
        LimitKind.CONCURRENT: "calls at once",
    }[hit.kind]
    needs = f", this call needs {rate.amount}" if hit.kind == LimitKind.TPM else ""
    return RateLimited(
        f"rate limit of {hit.scope} reached: {hit.limit} {what}, {used} used{needs};"
        f" retry in {wait:.0f}s",
        wait,
        scope=hit.scope,
        limit_kind=hit.kind,
        limit=hit.limit,
        used=used,
        resets_at=datetime.fromtimestamp(reset, UTC).isoformat() if reset else None,
    )
