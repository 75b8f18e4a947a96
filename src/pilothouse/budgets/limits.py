"""Rate limits: requests per minute, tokens per minute and concurrent calls per scope, counted
in the shared store so that they hold across replicas (never per process).

Configured in the settings (``rate_limits``). A limit's ``scope`` is ``org``, or
``<kind>:<value>`` with a kind of ``team``, ``user``, ``project``, ``use_case``, ``repository``,
``session``, ``key`` or ``label`` (``label:<name>=<value>``). The value ``*`` gives every value
of that kind its own limit: ``user:*`` with ``rpm: 60`` lets each user make 60 calls a minute.

Minutes are fixed UTC minutes. Requests count when admitted; tokens are reserved when admitted
(the prompt's estimate plus the output cap) and settle to the call's actual tokens; a concurrent
slot is taken when admitted and given back when the call ends (or, if its process dies, when the
sweeper settles its reservation).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pilothouse.budgets.model import ScopeKind, scope_values
from pilothouse.identity.principal import Principal


class RateLimitConfig(BaseModel):
    """One rate limit on a scope."""

    model_config = ConfigDict(extra="forbid")

    scope: str = Field(
        description="org, or kind:value (team, user, project, use_case, repository, session,"
        " key, label:name=value); a value of * limits each value on its own."
    )
    rpm: int | None = Field(None, ge=1, description="Calls admitted per UTC minute.")
    tpm: int | None = Field(None, ge=1, description="Tokens (input + output) per UTC minute.")
    concurrent: int | None = Field(None, ge=1, description="Calls in flight at once.")

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        kind, sep, rest = value.partition(":")
        try:
            parsed = ScopeKind(kind)
        except ValueError:
            kinds = ", ".join(k.value for k in ScopeKind)
            raise ValueError(f"{value!r}: the scope kind must be one of {kinds}") from None
        if parsed is ScopeKind.ORG:
            if sep:
                raise ValueError(f"{value!r}: the org scope takes no value")
        elif not rest:
            raise ValueError(f"{value!r}: give a value or * after the colon")
        elif parsed is ScopeKind.LABEL and "=" not in rest:
            raise ValueError(f"{value!r}: a label scope is label:<name>=<value> (or =*)")
        return value


class LimitKind:
    """What a counter counts."""

    RPM = "rpm"
    TPM = "tpm"
    CONCURRENT = "conc"


@dataclass(frozen=True, slots=True)
class LimitHit:
    """One limit a call counts against: the scope it applies to and its number."""

    kind: str
    scope: str
    limit: int


def limits_for(configs: list[RateLimitConfig], principal: Principal) -> list[LimitHit]:
    """Every limit a call by ``principal`` counts against (a ``*`` scope made concrete)."""
    if not configs:
        return []
    scopes = scope_values(principal)
    found: list[LimitHit] = []
    for config in configs:
        for scope in _concrete(config.scope, scopes):
            for kind, limit in (
                (LimitKind.RPM, config.rpm),
                (LimitKind.TPM, config.tpm),
                (LimitKind.CONCURRENT, config.concurrent),
            ):
                if limit is not None:
                    found.append(LimitHit(kind, scope, limit))
    return found


def _concrete(selector: str, scopes: dict[ScopeKind, set[str]]) -> list[str]:
    kind_name, _, value = selector.partition(":")
    kind = ScopeKind(kind_name)
    if kind is ScopeKind.ORG:
        return ["org"]
    have = scopes.get(kind, set())
    if kind is ScopeKind.LABEL:
        name, _, wanted = value.partition("=")
        matches = [v for v in have if v.partition("=")[0] == name]
        if wanted != "*":
            matches = [v for v in matches if v == value]
        return [f"label:{v}" for v in sorted(matches)]
    if value == "*":
        return [f"{kind.value}:{v}" for v in sorted(have)]
    return [selector] if value in have else []
