"""Simulation: what a candidate policy would have decided on the checks already made.

Every check is recorded with its action and its subject as the engine saw them
(``policy_checks``). A simulation replays the most recent of them through the active policy and
through the candidate, and reports each check whose decision would change, counted by
transition (``allow->deny``, ...) with examples, before the candidate is stored. Comparing with
the active policy, not with the decision recorded at the time, shows what this change does and
nothing that earlier changes did; the recorded decision is shown beside each example.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from pilothouse.api.types import Body, Document, Moment
from pilothouse.policy.checks import subject_from_json
from pilothouse.policy.document import Channel, Verdict, load
from pilothouse.policy.engine import Action, Policy
from pilothouse.policy.tables import policy_checks
from pilothouse.policy.versions import PolicyBook
from pilothouse.store.engine import Store

MAX_EXAMPLES = 20


class SimulateRequest(Body):
    """A candidate policy and the checks to replay it over."""

    source: Document = Field(description="the candidate policy's YAML")
    limit: int = Field(5000, ge=1, le=50_000, description="replay at most this many checks")
    since: Moment | None = Field(None, description="only checks made from this moment on")


class Outcome(BaseModel):
    """One policy's answer to a replayed check."""

    decision: Verdict
    rule: str | None
    reason: str


class Changed(BaseModel):
    """A replayed check whose decision the candidate changes."""

    check_id: str
    created_at: datetime
    session_id: str | None
    channel: str
    action: dict[str, Any]
    recorded: Verdict
    active: Outcome
    candidate: Outcome


class SimulationReport(BaseModel):
    """What the candidate would change."""

    active_version: int
    replayed: int
    changed: int
    transitions: dict[str, int]
    by_rule: dict[str, int] = Field(description="changed checks by the candidate's deciding rule")
    examples: list[Changed]


def _outcome(policy: Policy, row: Any) -> Outcome:
    action = Action(Channel(row["channel"]), **json.loads(row["action"]))
    decided = policy.decide(subject_from_json(json.loads(row["subject"])), action)
    return Outcome(decision=decided.decision, rule=decided.rule, reason=decided.reason)


async def simulate(
    store: Store, book: PolicyBook, org_id: str, body: SimulateRequest
) -> SimulationReport:
    """Replay ``body``'s candidate (raises PolicyInvalid, naming the lines, if it does not load)."""
    candidate = Policy(load(body.source))
    active = await book.active(org_id)
    query = select(policy_checks).where(policy_checks.c.org_id == org_id)
    if body.since is not None:
        query = query.where(policy_checks.c.created_at >= body.since)
    query = query.order_by(policy_checks.c.id.desc()).limit(body.limit)
    async with store.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    transitions: Counter[str] = Counter()
    by_rule: Counter[str] = Counter()
    examples: list[Changed] = []
    for row in rows:
        before, after = _outcome(active.policy, row), _outcome(candidate, row)
        if before.decision == after.decision:
            continue
        transitions[f"{before.decision.value}->{after.decision.value}"] += 1
        by_rule[after.rule or before.rule or "(default)"] += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append(
                Changed(
                    check_id=row["id"],
                    created_at=row["created_at"],
                    session_id=row["session_id"],
                    channel=row["channel"],
                    action=json.loads(row["action"]),
                    recorded=Verdict(row["decision"]),
                    active=before,
                    candidate=after,
                )
            )
    return SimulationReport(
        active_version=active.version,
        replayed=len(rows),
        changed=sum(transitions.values()),
        transitions=dict(transitions),
        by_rule=dict(by_rule),
        examples=examples,
    )
