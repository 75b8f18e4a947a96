"""Policy routes under /api/v1: the policy and its versions, simulation, checks, scans and
approvals."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from pilothouse.api.deps import ERROR_RESPONSES, context_of, require, services_of
from pilothouse.api.types import Body, Document, Limit, ObjectId, Page, Text
from pilothouse.context import RequestContext
from pilothouse.identity.roles import Permission
from pilothouse.policy import simulate as simulation
from pilothouse.policy import versions
from pilothouse.policy.approvals import ApprovalView, Decide, Status
from pilothouse.policy.checks import (
    Checker,
    CheckRequest,
    CheckResult,
    ScanRequest,
    ScanResponse,
)
from pilothouse.policy.document import Verdict, load
from pilothouse.services import Services

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
# The route agents call before every action, mounted first: FastAPI tries routes in order, and
# each one it tries first costs a regular-expression match (bench/README, *Checks*).
hot_router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

Svc = Annotated[Services, Depends(services_of)]
Reader = Annotated[RequestContext, require(Permission.POLICY_READ)]
Writer = Annotated[RequestContext, require(Permission.POLICY_WRITE)]
ApprovalReader = Annotated[RequestContext, require(Permission.APPROVALS_READ)]
Decider = Annotated[RequestContext, require(Permission.APPROVALS_DECIDE)]
Caller = Annotated[RequestContext, Depends(context_of)]
MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the store


def checker_of(svc: Services) -> Checker:
    """The running Checker."""
    assert svc.checker is not None
    return svc.checker


class PolicyPut(Body):
    """A new version of the policy."""

    source: Document = Field(description="the whole policy document, YAML")
    comment: Text = ""
    base_version: int | None = Field(
        None,
        ge=0,
        description="the version this change was made from: refused (409) if another was"
        " stored since",
    )


class PolicySource(Body):
    """A policy document to validate."""

    source: Document


class Validated(BaseModel):
    """A document that loads."""

    valid: bool
    rules: int
    exceptions: int
    packs_disabled: list[str]
    rules_disabled: list[str]


class VersionPage(BaseModel):
    """Versions newest first; pass ``next_before`` as ``before`` for the next page."""

    data: list[versions.VersionView]
    next_before: int | None


@router.get("/policy", tags=["policy"], summary="The active policy")
async def get_policy(svc: Svc, ctx: Reader) -> versions.VersionView:
    """The active version of the organization's policy, with its YAML (version 0: none stored
    yet, the built-in packs and default allow)."""
    return await versions.read_version(svc.store, ctx.org_id, None)


@router.put("/policy", tags=["policy"], summary="Store a new version of the policy")
async def put_policy(body: PolicyPut, svc: Svc, ctx: Writer) -> versions.VersionView:
    """Validate the YAML and store it as the next version; it decides from the next check on,
    on every replica. An invalid document is refused (422 ``policy_invalid``, each problem with
    its line) and the active policy is unchanged."""
    return await versions.put_policy(
        svc.store,
        svc.invalidations,
        ctx,
        body.source,
        body.comment,
        body.base_version,
        checker_of(svc).book,
    )


@router.post("/policy/validate", tags=["policy"], summary="Validate a policy document")
async def validate_policy(body: PolicySource, ctx: Reader) -> Validated:
    """Check that a document loads, without storing it (422 ``policy_invalid`` otherwise)."""
    document = load(body.source)
    return Validated(
        valid=True,
        rules=len(document.rules),
        exceptions=len(document.exceptions),
        packs_disabled=document.packs.disabled,
        rules_disabled=document.packs.disabled_rules,
    )


@router.get("/policy/versions", tags=["policy"], summary="List the policy's versions")
async def list_versions(
    svc: Svc,
    ctx: Reader,
    limit: Annotated[Limit, Query(description="items per page")] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="next_before of the last page")
    ] = None,
) -> VersionPage:
    """Stored versions, newest first, with author, time and origin (api, file, approval)."""
    data, next_before = await versions.list_versions(svc.store, ctx.org_id, limit, before)
    return VersionPage(data=data, next_before=next_before)


@router.get("/policy/versions/{version}", tags=["policy"], summary="Show a policy version")
async def get_version(
    version: Annotated[int, Path(ge=0, le=MAX_VERSION)], svc: Svc, ctx: Reader
) -> versions.VersionView:
    """One version, with its YAML."""
    return await versions.read_version(svc.store, ctx.org_id, version)


@router.post("/policy/simulate", tags=["policy"], summary="Simulate a candidate policy")
async def simulate_policy(
    body: simulation.SimulateRequest, svc: Svc, ctx: Reader
) -> simulation.SimulationReport:
    """Replay recorded checks through the active policy and the candidate, and report every
    decision the candidate would change, with examples. Nothing is stored."""
    return await simulation.simulate(svc.store, checker_of(svc).book, ctx.org_id, body)


@hot_router.post("/check", tags=["checks"], summary="Check an action")
async def check(body: CheckRequest, svc: Svc, ctx: Caller) -> CheckResult:
    """Decide an agent's action: allow, deny, or ask (with an approval). With ``wait``, an ask
    waits that long for a human: the answer is then allow or deny (an expired approval
    denies). Every check is recorded and audited before it is answered.

    A session key checks its own actions; a user key its own or its sessions'; a service key
    needs the ``policy:check`` scope."""
    return await checker_of(svc).check(ctx, body)


@router.post("/scan", tags=["checks"], summary="Scan content for prompt injection")
async def scan(body: ScanRequest, svc: Svc, ctx: Caller) -> ScanResponse:
    """Scan content an agent read (a tool's result, a fetched page). If it is flagged, the
    session is marked tainted (audited), which rules can match."""
    return await checker_of(svc).scan(ctx, body)


@router.get("/approvals", tags=["approvals"], summary="List approvals")
async def list_approvals(
    svc: Svc,
    ctx: ApprovalReader,
    status: Annotated[Status | None, Query(description="only approvals in this state")] = None,
    session_id: Annotated[ObjectId | None, Query(description="only this session's")] = None,
    limit: Annotated[Limit, Query(description="items per page")] = 50,
    cursor: Annotated[
        ObjectId | None, Query(description="next_cursor from the previous page")
    ] = None,
) -> Page[ApprovalView]:
    """Approvals of the organization, newest first."""
    return await checker_of(svc).approvals.list(ctx, status, session_id, limit, cursor)


@router.get("/approvals/{approval_id}", tags=["approvals"], summary="Show an approval")
async def get_approval(approval_id: ObjectId, svc: Svc, ctx: ApprovalReader) -> ApprovalView:
    """One approval."""
    return await checker_of(svc).approvals.read(ctx, approval_id)


@router.post("/approvals/{approval_id}/approve", tags=["approvals"], summary="Approve an action")
async def approve(approval_id: ObjectId, body: Decide, svc: Svc, ctx: Decider) -> ApprovalView:
    """Let the waiting action run, once (with ``add_rule``, from now on). A person's key with
    ``approvals:decide`` only; not the session's own user unless the policy allows it."""
    return await checker_of(svc).approvals.decide(ctx, approval_id, Verdict.ALLOW, body)


@router.post("/approvals/{approval_id}/deny", tags=["approvals"], summary="Deny an action")
async def deny(approval_id: ObjectId, body: Decide, svc: Svc, ctx: Decider) -> ApprovalView:
    """Refuse the waiting action."""
    return await checker_of(svc).approvals.decide(ctx, approval_id, Verdict.DENY, body)
