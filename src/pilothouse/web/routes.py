"""The dashboard's pages: sign-in, the overview, sessions and their timelines, approvals (live),
the policy (edit, validate, simulate, history and diffs), API keys, and the audit log. Each
reads through the domain functions the API routes use, with the permission those routes need
(``pages.page``)."""

from __future__ import annotations

import csv
import difflib
import io
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from pilothouse import __version__
from pilothouse.audit import events as audit_events
from pilothouse.budgets import service as budget_service
from pilothouse.budgets.model import Window, window_start
from pilothouse.budgets.views import BudgetCreate
from pilothouse.context import RequestContext
from pilothouse.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PilothouseError,
    PolicyInvalid,
    SignInRefused,
    SsoRefused,
    TooManyFailures,
    ValidationFailed,
)
from pilothouse.gateway import spend
from pilothouse.gateway.usage_rows import UsageFilters, dollars, make_filters
from pilothouse.identity import apikeys, sessions, timeline
from pilothouse.identity import teams as teams_domain
from pilothouse.identity import users as users_domain
from pilothouse.identity.roles import Permission, Role
from pilothouse.identity.tables import teams, users
from pilothouse.identity.tokens import KeyKind
from pilothouse.mcp import routes as mcp_routes
from pilothouse.policy import simulate as simulation
from pilothouse.policy import versions
from pilothouse.policy.approvals import Decide
from pilothouse.policy.document import Verdict, load
from pilothouse.web import charts
from pilothouse.web.auth import COOKIE, LOGIN_CSRF_COOKIE, same
from pilothouse.web.oidc import (
    FLOW_COOKIE,
    FLOW_PURPOSE,
    FLOW_SECONDS,
    Oidc,
    flow_cookie,
    flow_from,
)
from pilothouse.web.pages import (
    Page,
    WebRoute,
    check_origin,
    form_fields,
    page,
    posted,
    render,
    secure_cookies,
    signed_in,
    web_auth,
)

router = APIRouter(route_class=WebRoute, include_in_schema=False)
TOP = 5  # rows in each of the overview's top lists
PAGE = 100  # audit events a page
MAX_VERSION = 2**31 - 1  # policy versions are 32-bit integers in the store
MAX_DOCUMENT = 256 * 1024  # characters of a policy draft


# --- signing in and out ---------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> HTMLResponse:
    """The sign-in form (with its double-submit CSRF token)."""
    return _login_page(request, _safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    """Sign in with an email and a password; back to the form with the reason if not."""
    check_origin(request)
    fields = await form_fields(request)
    target = _safe_next(fields.get("next", "/"))
    if not same(fields.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE) or "\0"):
        return _login_page(request, target, "The form expired: sign in again.", 403)
    address = request.client.host if request.client else "?"
    try:
        token, _ = await web_auth(request).sign_in(
            fields.get("email", ""),
            fields.get("password", ""),
            fields.get("organization") or None,
            address,
        )
    except (SignInRefused, TooManyFailures) as exc:
        return _login_page(request, target, exc.message, exc.status)
    response = _signed_in(request, token, target)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, who: Page = page()) -> Response:
    """Sign out (ends the session on the server, not only the cookie)."""
    await posted(request, who)
    await web_auth(request).sign_out(who.signed)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/login/oidc")
async def oidc_start(request: Request, next: str = "/") -> Response:
    """Leave for the OpenID Connect issuer (if one is configured)."""
    oidc = _oidc(request)
    try:
        target, flow = await oidc.start(_callback_uri(request), _safe_next(next))
    except SsoRefused as exc:
        return _login_page(request, "/", exc.message, exc.status)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        flow_cookie(flow, _flow_keys(request)[0]),
        max_age=FLOW_SECONDS,
        httponly=True,
        samesite="lax",  # the issuer's redirect back is a top-level navigation: Lax sends it
        secure=secure_cookies(request),
        path="/login/oidc",
    )
    return response


@router.get("/login/oidc/callback")
async def oidc_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=400)] = None,
    error: Annotated[str | None, Query(max_length=400)] = None,
) -> Response:
    """Back from the issuer: verify, find the person, sign them in (or say why not)."""
    oidc = _oidc(request)
    auth = web_auth(request)
    address = request.client.host if request.client else "?"
    flow = flow_from(request.cookies.get(FLOW_COOKIE), _flow_keys(request))
    try:
        if error:
            raise SsoRefused(f"the issuer refused: {error}")
        if flow is None or not same(state, flow.state) or not code:
            raise SsoRefused("this sign-in expired or did not start here: sign in again")
        who = await oidc.finish(code, _callback_uri(request), flow)
        config = oidc.config
        user_id = await auth.sso_user(config.organization, who.email, who.name, config.create_role)
    except SignInRefused as exc:  # single sign-on's refusals included
        await auth.audit_refusal("oidc", exc.message, address)
        refused = _login_page(request, "/", exc.message, 401)
        refused.delete_cookie(FLOW_COOKIE, path="/login/oidc")
        return refused
    token, _ = await auth.open_session(user_id, "oidc", address)
    signed = _signed_in(request, token, flow.next if flow else "/")
    signed.delete_cookie(FLOW_COOKIE, path="/login/oidc")
    return signed


def _oidc(request: Request) -> Oidc:
    oidc = request.app.state.services.oidc
    if oidc is None:
        raise NotFound("single sign-on is not configured")
    return oidc  # type: ignore[no-any-return]


def _callback_uri(request: Request) -> str:
    """Where the issuer sends the browser back: under public_url if set, else this request's
    own origin (the issuer must have it registered)."""
    public = request.app.state.services.settings.public_url
    base = public.rstrip("/") if public else f"{request.url.scheme}://{request.url.netloc}"
    return f"{base}/login/oidc/callback"


def _flow_keys(request: Request) -> list[bytes]:
    """The keys of the flow cookie, derived from the master keys, so the same on every replica:
    it is signed with the current one's and checked with each (a sign-in that began on a
    replica with another current key, during a rotation, still ends)."""
    book = request.app.state.services.secrets
    assert book is not None
    return book.keyring.derive_all(FLOW_PURPOSE)  # type: ignore[no-any-return]


def _signed_in(request: Request, token: str, target: str) -> Response:
    """Off to ``target`` with the new session's cookie."""
    response = RedirectResponse(target, status_code=303)
    hours = request.app.state.services.settings.web_session_hours
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(hours * 3600),
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
    )
    return response


def _login_page(
    request: Request, target: str, error: str | None = None, status: int = 200
) -> HTMLResponse:
    csrf = secrets.token_urlsafe(24)
    oidc = request.app.state.services.oidc
    sso = oidc.config.label if oidc is not None else None
    response = render(request, "login.html", status, next=target, csrf=csrf, error=error, sso=sso)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        path="/login",
    )
    return response


def _safe_next(target: str) -> str:
    """Where to go after signing in: a path on this site only (never another site)."""
    parts = urlsplit(target)
    # Browsers read a backslash as a slash: "/\\evil.example" would leave the site.
    if parts.scheme or parts.netloc or not target.startswith("/") or "\\" in target:
        return "/"
    if target.startswith("//") or any(ord(c) < 32 for c in target):
        return "/"
    return target


# --- the overview ----------------------------------------------------------------------------


@router.api_route("/", methods=["GET", "HEAD"], response_model=None)
async def overview(request: Request) -> Any:
    """The overview for a browser; for anything else (a client probing its base URL) what
    the service is."""
    if request.method == "HEAD" or "text/html" not in request.headers.get("accept", ""):
        return {"service": "pilothouse", "version": __version__}
    signed = await signed_in(request)
    services = request.app.state.services
    ctx = RequestContext(signed.principal, request.state.request_id, services.clock)
    who = Page(request, signed, ctx)
    values: dict[str, Any] = {}
    now = services.clock.now()
    if who.can(Permission.USAGE_READ):
        await services.usage_settled()
        values.update(await _spend_overview(who, now))
    if who.can(Permission.BUDGETS_READ):
        values["budgets"] = await _budgets(who)
    if who.can(Permission.SESSIONS_READ):
        running = await sessions.list_sessions(
            services.store,
            ctx,
            sessions.SessionFilters(status=sessions.SessionStatus.ACTIVE),
            limit=10,
            cursor=None,
        )
        values["running"] = running.data
    if who.can(Permission.APPROVALS_READ):
        assert services.checker is not None
        waiting = await services.checker.approvals.list(ctx, "pending", None, 10, None)
        values["waiting"] = waiting.data
    return who.render("overview.html", **values)


async def _spend_overview(who: Page, now: datetime) -> dict[str, Any]:
    store = who.services.store
    day, week, month = (window_start(w, now) for w in (Window.DAY, Window.WEEK, Window.MONTH))
    start = day - timedelta(days=29)
    # One report by day covers the chart's 30 days and this month: today's, this week's and
    # this month's totals are its days added up, not three more reports over the same rows.
    daily = await spend.spend_report(
        store, who.ctx, UsageFilters(since=min(start, month)), [], spend.Interval.DAY, limit=100
    )
    totals = {
        name: spend.SpendSums.of(g for g in daily.groups if g.bucket and g.bucket >= since)
        for name, since in (("today", day), ("week", week), ("month", month))
    }
    by_day = {g.bucket.date(): g.cost_picos for g in daily.groups if g.bucket is not None}
    points = []
    for i in range(30):
        date = (start + timedelta(days=i)).date()
        picos = by_day.get(date, 0)
        points.append(
            charts.Point(
                date.strftime("%d %b"), picos / 1e12, f"{date:%a %d %b}: ${dollars(picos)}"
            )
        )
    tops = {}
    for key, title in (
        ("team", "Teams"),
        ("user", "Users"),
        ("repo", "Repositories"),
        ("label:use_case", "Use cases"),
        ("model", "Models"),
    ):
        report = await spend.spend_report(
            store, who.ctx, UsageFilters(since=month), spend.parse_group_by(key), None, limit=TOP
        )
        tops[title] = [(g.keys[key], g) for g in report.groups[:TOP]]
    shown = await _names(who, [k for rows in tops.values() for k, _ in rows if k])
    return {
        "names": shown,
        "totals": totals,
        "chart": charts.bars(points, caption="Spend per day, last 30 days (UTC)"),
        "tops": tops,
    }


async def _names(who: Page, ids: list[str]) -> dict[str, str]:
    """What people call the teams and users among ``ids`` (their names, or emails)."""
    teams_wanted = [i for i in ids if i.startswith("team_")]
    users_wanted = [i for i in ids if i.startswith("usr_")]
    found: dict[str, str] = {}
    async with who.services.store.read() as conn:
        if teams_wanted:
            rows = await conn.execute(
                select(teams.c.id, teams.c.name).where(
                    teams.c.org_id == who.ctx.org_id, teams.c.id.in_(teams_wanted)
                )
            )
            found.update({row.id: row.name for row in rows})
        if users_wanted:
            rows = await conn.execute(
                select(users.c.id, users.c.name, users.c.email).where(
                    users.c.org_id == who.ctx.org_id, users.c.id.in_(users_wanted)
                )
            )
            found.update({row.id: row.name or row.email for row in rows})
    return found


async def _budgets(who: Page) -> list[dict[str, Any]]:
    await who.services.usage_settled()
    found = await budget_service.list_budgets(
        who.services.store, who.ctx, scope_kind=None, scope_value=None, limit=100, cursor=None
    )
    shown = []
    for budget in found.data:
        spent, limit = float(budget.current.spent_usd), float(budget.limit_usd)
        caption = f"{budget.name or budget.scope}: ${spent:,.2f} of ${limit:,.2f} ({budget.window})"
        shown.append(
            {
                "budget": budget,
                "spent": spent,
                "limit": limit,
                "meter": charts.meter(spent, limit, caption=caption),
            }
        )
    return shown


# --- sessions --------------------------------------------------------------------------------


@router.get("/sessions")
async def session_list(
    who: Page = page(Permission.SESSIONS_READ),
    status: sessions.SessionStatus | None = None,
    team_id: Annotated[str | None, Query(max_length=40)] = None,
    user_id: Annotated[str | None, Query(max_length=40)] = None,
    project: Annotated[str | None, Query(max_length=200)] = None,
    repository: Annotated[str | None, Query(max_length=400)] = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    """Sessions, newest first, with filters (a member sees their own)."""
    filters = sessions.SessionFilters(
        status=status,
        team_id=team_id or None,
        user_id=user_id or None,
        project=project or None,
        repository=repository or None,
    )
    found = await sessions.list_sessions(
        who.services.store, who.ctx, filters, limit=50, cursor=cursor or None
    )
    return who.render("sessions.html", found=found, filters=filters)


@router.get("/sessions/{session_id}")
async def session_page(session_id: str, who: Page = page(Permission.SESSIONS_READ)) -> HTMLResponse:
    """One session's timeline, with totals."""
    await who.services.usage_settled()
    found = await timeline.session_timeline(who.services.store, who.ctx, session_id[:40])
    return who.render("session.html", timeline=found)


# --- approvals -------------------------------------------------------------------------------


@router.get("/approvals")
async def approval_queue(
    request: Request, who: Page = page(Permission.APPROVALS_READ)
) -> HTMLResponse:
    """The waiting queue (refreshed in place every two seconds) and the history."""
    values = await _approvals(who)
    if "fragment" in request.query_params:
        return who.render("_approvals_waiting.html", **values)
    return who.render("approvals.html", **values)


@router.post("/approvals/{approval_id}/{verdict}")
async def decide(
    request: Request, approval_id: str, verdict: str, who: Page = page(Permission.APPROVALS_DECIDE)
) -> Response:
    """Approve or deny a waiting action, with a comment; an approval may also store a policy
    exception that lets the same action through from then on."""
    fields = await posted(request, who)
    if verdict not in ("approve", "deny"):
        raise NotFound(f"no decision {verdict[:20]!r}: approve or deny")
    checker = who.services.checker
    assert checker is not None
    comment = (fields.get("comment") or "").strip()[:2000] or None
    # As the API's ``add_rule``: approve only (409 with deny), and policy:write (403 without).
    add_rule = fields.get("add_rule") == "on"
    await checker.approvals.decide(
        who.ctx,
        approval_id[:40],
        Verdict.ALLOW if verdict == "approve" else Verdict.DENY,
        Decide(comment=comment, add_rule=add_rule),
    )
    return RedirectResponse("/approvals", status_code=303)


async def _approvals(who: Page) -> dict[str, Any]:
    checker = who.services.checker
    assert checker is not None
    waiting = await checker.approvals.list(who.ctx, "pending", None, 100, None)
    history = await checker.approvals.list(who.ctx, None, None, 50, None)
    return {
        "waiting": waiting.data,
        "history": [a for a in history.data if a.status != "pending"],
        "may_decide": who.can(Permission.APPROVALS_DECIDE),
        "may_add_rule": who.can(Permission.POLICY_WRITE),
    }


# --- audit -----------------------------------------------------------------------------------


@router.get("/audit")
async def audit_page(
    who: Page = page(Permission.AUDIT_READ),
    action: Annotated[str | None, Query(max_length=80, pattern=r"^[^\x00]*$")] = None,
    target_id: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
    actor_id: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
    before_seq: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    verify: bool = False,
) -> HTMLResponse:
    """Audit events, newest first, searched by action (exact, or prefix*), target and actor;
    with ``verify``, the whole chain walked and its status shown."""
    store = who.services.store
    search = {
        "action": action or None,
        "target_id": target_id or None,
        "actor_id": actor_id or None,
    }
    found = await audit_events.list_events(
        store, who.ctx, **search, after_seq=None, before_seq=before_seq, limit=PAGE
    )
    verified = await audit_events.verify_chain(store, who.ctx, None) if verify else None
    older = found.data[-1].seq if len(found.data) == PAGE else None
    return who.render("audit.html", found=found, verified=verified, search=search, older=older)


# --- policy ----------------------------------------------------------------------------------


@router.get("/policy")
async def policy_page(
    who: Page = page(Permission.POLICY_READ),
    diff: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> HTMLResponse:
    """The active policy (editable with policy:write), its history, and a version's diff."""
    return await _policy(who, diff=diff)


@router.post("/policy")
async def policy_form(request: Request, who: Page = page(Permission.POLICY_READ)) -> Response:
    """Validate, simulate (both with policy:read, as the API) or store (policy:write) a draft;
    problems are shown beside the draft, which is kept as typed."""
    fields = await posted(request, who)
    draft = fields.get("source", "").replace("\r\n", "\n")[:MAX_DOCUMENT]
    comment = fields.get("comment", "")[:500]
    intent = fields.get("intent", "validate")
    base = fields.get("base_version", "")
    values: dict[str, Any] = {"draft": draft, "comment": comment, "intent": intent}
    try:
        if intent == "save":
            if not who.can(Permission.POLICY_WRITE):
                raise Forbidden(
                    "this needs the policy:write permission, which your role lacks",
                    permission=Permission.POLICY_WRITE.value,
                )
            checker = who.services.checker
            assert checker is not None
            stored = await versions.put_policy(
                who.services.store,
                who.services.invalidations,
                who.ctx,
                draft,
                comment,
                int(base) if base.isdigit() else None,
                checker.book,
            )
            return RedirectResponse(f"/policy?diff={stored.version}", status_code=303)
        document = load(draft)
        values["valid"] = {"rules": len(document.rules), "exceptions": len(document.exceptions)}
        if intent == "simulate":
            checker = who.services.checker
            assert checker is not None
            values["simulation"] = await simulation.simulate(
                who.services.store,
                checker.book,
                who.ctx.org_id,
                simulation.SimulateRequest(source=draft),
            )
    except PolicyInvalid as exc:
        values["problems"] = exc.details.get("problems", [])
        return await _policy(who, status=422, **values)
    except Conflict as exc:
        values["problems"] = [{"line": None, "path": None, "message": exc.message}]
        return await _policy(who, status=409, **values)
    return await _policy(who, **values)


async def _policy(
    who: Page, *, diff: int | None = None, status: int = 200, **values: Any
) -> HTMLResponse:
    store, org_id = who.services.store, who.ctx.org_id
    active = await versions.read_version(store, org_id, None)
    history, _ = await versions.list_versions(store, org_id, 50, None)
    lines: list[str] = []
    if diff is not None:
        after = await versions.read_version(store, org_id, diff)
        before = await versions.read_version(store, org_id, diff - 1) if diff > 1 else None
        lines = list(
            difflib.unified_diff(
                (before.source or "").splitlines() if before else [],
                (after.source or "").splitlines(),
                f"version {diff - 1}" if before else "no policy",
                f"version {diff}",
                lineterm="",
            )
        )
    return who.render(
        "policy.html",
        status,
        active=active,
        history=history,
        diff=diff,
        diff_lines=lines,
        may_write=who.can(Permission.POLICY_WRITE),
        draft=values.pop("draft", active.source or ""),
        **values,
    )


# --- keys ------------------------------------------------------------------------------------


@router.get("/keys")
async def keys_page(
    who: Page = page(Permission.KEYS_OWN), include_revoked: bool = False
) -> HTMLResponse:
    """API keys: everyone's with keys:read_all, otherwise your own; revoke, make a new one."""
    return await _keys(who, include_revoked=include_revoked)


@router.post("/keys")
async def create_key_form(request: Request, who: Page = page(Permission.KEYS_OWN)) -> Response:
    """Make a key for yourself (or, with keys:manage, a service key); its token is shown
    this once."""
    fields = await posted(request, who)
    kind = "service" if fields.get("kind") == "service" else "user"
    scopes = [s for s in fields.get("scopes", "").replace(",", " ").split() if s]
    try:
        body = apikeys.KeyCreate.model_validate(
            {"kind": kind, "name": fields.get("name", "")[:200], "scopes": scopes}
        )
    except ValidationError as exc:
        return await _keys(who, status=422, problem=_first_problem(exc))
    made = await apikeys.create_key(who.services.store, who.ctx, body)
    return await _keys(who, created=made)


@router.post("/keys/{key_id}/revoke")
async def revoke_key_form(
    request: Request, key_id: str, who: Page = page(Permission.KEYS_OWN)
) -> Response:
    """Revoke a key: refused at once here, within two seconds on every replica."""
    await posted(request, who)
    await apikeys.revoke_key(who.services.store, who.services.invalidations, who.ctx, key_id[:40])
    return RedirectResponse("/keys", status_code=303)


async def _keys(
    who: Page, *, include_revoked: bool = False, status: int = 200, **values: Any
) -> HTMLResponse:
    found = await apikeys.list_keys(
        who.services.store,
        who.ctx,
        kind=None,
        user_id=None,
        include_revoked=include_revoked,
        limit=200,
        cursor=None,
    )
    shown = [k for k in found.data if k.kind is not KeyKind.SESSION]  # session keys: on sessions
    return who.render(
        "keys.html",
        status,
        keys=shown,
        include_revoked=include_revoked,
        may_manage=who.can(Permission.KEYS_MANAGE),
        **values,
    )


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}"


# --- spend -----------------------------------------------------------------------------------

SPEND_FILTERS = ("team_id", "user_id", "project", "repository", "model", "status", "session_id")
INTERVALS = {i.value for i in spend.Interval}
CSV_DANGER = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet would run as a formula
HOURLY_DAYS = 7
"""The longest range the explorer shows by the hour."""


@dataclass(frozen=True, slots=True)
class SpendQuery:
    """What the spend explorer shows: groups, time buckets, a date range and filters."""

    group_by: str
    interval: spend.Interval | None
    start: date
    end: date
    equal: dict[str, str]
    labels: list[str]

    @property
    def filters(self) -> UsageFilters:
        """The usage filters the API's spend report takes (end inclusive, whole UTC days)."""
        since = datetime.combine(self.start, time.min, UTC)
        until = datetime.combine(self.end + timedelta(days=1), time.min, UTC)
        return make_filters(since, until, dict(self.equal), self.labels)

    def link(self, **changes: Any) -> str:
        """This query as a URL query string, with ``changes``."""
        values: dict[str, Any] = {
            "group_by": self.group_by,
            "interval": self.interval.value if self.interval else "",
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            **self.equal,
        }
        values.update(changes)
        pairs = [(k, v) for k, v in values.items() if v not in (None, "")]
        pairs += [("label", label) for label in self.labels]
        return urlencode(pairs)


def spend_query(
    request: Request,
    group_by: Annotated[str, Query(max_length=400)] = "team",
    interval: Annotated[str, Query(max_length=10)] = "day",
    start: date | None = None,
    end: date | None = None,
    label: Annotated[list[str] | None, Query(max_length=32)] = None,
) -> SpendQuery:
    """The explorer's query from its URL (the last 30 days, by team and day, by default)."""
    today = request.app.state.services.clock.now().date()
    equal = {
        name: request.query_params[name][:400]
        for name in SPEND_FILTERS
        if request.query_params.get(name)
    }
    return SpendQuery(
        group_by=group_by,
        interval=spend.Interval(interval) if interval in INTERVALS else None,
        start=start or today - timedelta(days=29),
        end=end or today,
        equal=equal,
        labels=[x[:400] for x in label or [] if x],
    )


@router.get("/spend")
async def spend_page(
    who: Page = page(Permission.USAGE_READ), query: SpendQuery = Depends(spend_query)
) -> HTMLResponse:
    """Spend grouped by any attribution dimension over a date range, filtered; a chart of the
    buckets and a table of the groups."""
    report = await _spend_report(who, query)
    by_bucket: dict[Any, int] = {}
    for group in report.groups:
        by_bucket[group.bucket] = by_bucket.get(group.bucket, 0) + group.cost_picos
    points = [
        charts.Point(
            _bucket_label(bucket, query.interval),
            picos / 1e12,
            f"{_bucket_label(bucket, query.interval)}: ${dollars(picos)}",
        )
        for bucket, picos in sorted(by_bucket.items(), key=lambda item: item[0] or datetime.min)
    ]
    keys = [k.name for k in spend.parse_group_by(query.group_by)]
    ids = [v for g in report.groups for v in g.keys.values() if v]
    return who.render(
        "spend.html",
        query=query,
        report=report,
        keys=keys,
        names=await _names(who, ids),
        chart=charts.bars(points, caption="Spend per bucket") if query.interval else None,
        fields=spend.GROUP_FIELDS,
        filters=SPEND_FILTERS,
    )


@router.get("/spend.csv")
async def spend_csv(
    who: Page = page(Permission.USAGE_READ), query: SpendQuery = Depends(spend_query)
) -> Response:
    """The explorer's table as CSV (exact dollars; cells that a spreadsheet would run as a
    formula are quoted with a leading apostrophe)."""
    report = await _spend_report(who, query)
    keys = [k.name for k in spend.parse_group_by(query.group_by)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["bucket", *keys, "calls", "input_tokens", "output_tokens", "cost_usd"])
    for group in report.groups:
        writer.writerow(
            [
                group.bucket.isoformat() if group.bucket else "",
                *(_cell(group.keys.get(k)) for k in keys),
                group.calls,
                group.tokens.input,
                group.tokens.output,
                group.cost,
            ]
        )
    name = f"pilothouse-spend-{query.start}-{query.end}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="{name}"',
            "cache-control": "no-store",
        },
    )


async def _spend_report(who: Page, query: SpendQuery) -> spend.SpendReport:
    if query.end < query.start:
        raise ValidationFailed("the end date is before the start date")
    if (query.end - query.start).days > 366 * 2:
        raise ValidationFailed("a range of at most two years")
    if query.interval is spend.Interval.HOUR and (query.end - query.start).days >= HOURLY_DAYS:
        # Hours are summed from the usage rows (the roll-ups are daily): a week of them is
        # quick, and 168 bars are as many as a chart can show.
        raise ValidationFailed(
            f"hourly buckets cover at most {HOURLY_DAYS} days; choose day, week or month"
            " for a longer range"
        )
    keys = spend.parse_group_by(query.group_by)
    await who.services.usage_settled()
    return await spend.spend_report(
        who.services.store, who.ctx, query.filters, keys, query.interval, limit=2000
    )


def _bucket_label(bucket: datetime | None, interval: spend.Interval | None) -> str:
    if bucket is None:
        return "all"
    if interval is spend.Interval.HOUR:
        return bucket.strftime("%d %b %H:00")
    if interval is spend.Interval.MONTH:
        return bucket.strftime("%b %Y")
    return bucket.strftime("%d %b")


def _cell(value: str | None) -> str:
    text = value or ""
    return f"'{text}" if text.startswith(CSV_DANGER) else text


# --- budgets ---------------------------------------------------------------------------------


@router.get("/budgets")
async def budgets_page(who: Page = page(Permission.BUDGETS_READ)) -> HTMLResponse:
    """Every budget with its burn bar and forecast; a form to add one (budgets:write)."""
    return await _budgets_page(who)


@router.post("/budgets")
async def create_budget_form(
    request: Request, who: Page = page(Permission.BUDGETS_WRITE)
) -> Response:
    """Add a budget, checked as the API checks it; a problem is shown beside the form."""
    fields = await posted(request, who)
    wanted = {
        "scope_kind": fields.get("scope_kind", ""),
        "scope_value": fields.get("scope_value", ""),
        "window": fields.get("window", ""),
        "limit_usd": fields.get("limit_usd", ""),
        "enforcement": fields.get("enforcement", "hard"),
    }
    if fields.get("name"):
        wanted["name"] = fields["name"][:200]
    try:
        body = BudgetCreate.model_validate(wanted)
    except ValidationError as exc:
        return await _budgets_page(who, status=422, problem=_first_problem(exc), form=wanted)
    try:
        await budget_service.create_budget(
            who.services.store, who.services.invalidations, who.ctx, body
        )
    except PilothouseError as exc:
        if isinstance(exc, Forbidden):
            raise
        return await _budgets_page(who, status=exc.status, problem=exc.message, form=wanted)
    return RedirectResponse("/budgets", status_code=303)


async def _budgets_page(who: Page, *, status: int = 200, **values: Any) -> HTMLResponse:
    return who.render(
        "budgets.html",
        status,
        budgets=await _budgets(who),
        may_write=who.can(Permission.BUDGETS_WRITE),
        **values,
    )


# --- people: users and teams -----------------------------------------------------------------


@router.get("/people")
async def people_page(
    who: Page = page(Permission.USERS_READ), include_disabled: bool = False
) -> HTMLResponse:
    """Users and teams; with users:write and teams:write, add and change them."""
    return await _people(who, include_disabled=include_disabled)


@router.post("/people/users")
async def create_user_form(request: Request, who: Page = page(Permission.USERS_WRITE)) -> Response:
    """Add a person with a role (an owner only by an owner, as in the API)."""
    fields = await posted(request, who)
    try:
        body = users_domain.UserCreate.model_validate(
            {
                "email": fields.get("email", ""),
                "name": fields.get("name", ""),
                "role": fields.get("role", "member"),
            }
        )
    except ValidationError as exc:
        return await _people(who, status=422, problem=_first_problem(exc))
    try:
        await users_domain.create_user(who.services.store, who.ctx, body)
    except (Conflict, ValidationFailed) as exc:
        return await _people(who, status=exc.status, problem=exc.message)
    return RedirectResponse("/people", status_code=303)


@router.post("/people/users/{user_id}")
async def update_user_form(
    request: Request, user_id: str, who: Page = page(Permission.USERS_WRITE)
) -> Response:
    """Change a person's role, or disable or enable them (their keys and sign-ins stop)."""
    fields = await posted(request, who)
    try:
        body = users_domain.UserUpdate.model_validate(
            {
                "role": fields.get("role") or None,
                "disabled": {"disable": True, "enable": False}.get(fields.get("change", "")),
            }
        )
    except ValidationError as exc:
        return await _people(who, status=422, problem=_first_problem(exc))
    try:
        await users_domain.update_user(
            who.services.store, who.services.invalidations, who.ctx, user_id[:40], body
        )
    except Conflict as exc:
        return await _people(who, status=exc.status, problem=exc.message)
    return RedirectResponse("/people", status_code=303)


@router.post("/people/teams")
async def create_team_form(request: Request, who: Page = page(Permission.TEAMS_WRITE)) -> Response:
    """Add a team."""
    fields = await posted(request, who)
    try:
        body = teams_domain.TeamCreate.model_validate(
            {"name": fields.get("name", ""), "description": fields.get("description", "")}
        )
    except ValidationError as exc:
        return await _people(who, status=422, problem=_first_problem(exc))
    try:
        await teams_domain.create_team(who.services.store, who.ctx, body)
    except Conflict as exc:
        return await _people(who, status=exc.status, problem=exc.message)
    return RedirectResponse("/people", status_code=303)


@router.post("/people/teams/{team_id}/members")
async def add_member_form(
    request: Request, team_id: str, who: Page = page(Permission.TEAMS_WRITE)
) -> Response:
    """Add a person to a team."""
    fields = await posted(request, who)
    body = teams_domain.MemberAdd.model_validate({"user_id": fields.get("user_id", "")[:40]})
    await teams_domain.add_team_member(who.services.store, who.ctx, team_id[:40], body)
    return RedirectResponse("/people", status_code=303)


async def _people(
    who: Page, *, include_disabled: bool = False, status: int = 200, **values: Any
) -> HTMLResponse:
    store = who.services.store
    people = await users_domain.list_users(
        store, who.ctx, role=None, include_disabled=include_disabled, limit=200, cursor=None
    )
    groups = await teams_domain.list_teams(store, who.ctx, limit=200, cursor=None)
    names = {u.id: u.name or u.email for u in people.data}
    return who.render(
        "people.html",
        status,
        people=people.data,
        teams=groups.data,
        names=names,
        roles=[r.value for r in Role],
        include_disabled=include_disabled,
        may_users=who.can(Permission.USERS_WRITE),
        may_teams=who.can(Permission.TEAMS_WRITE),
        **values,
    )


# --- MCP -------------------------------------------------------------------------------------


@router.get("/mcp-servers")
async def mcp_page(who: Page = page(Permission.MCP_READ)) -> HTMLResponse:
    """MCP upstreams and their state, every tool with its pin, and withheld tools to
    re-approve (the root organization's security people)."""
    svc = who.services
    return who.render(
        "mcp.html",
        servers=await mcp_routes.list_servers(svc, who.ctx),
        tools=await mcp_routes.list_tools(svc, who.ctx),
        pins=await mcp_routes.list_pins(svc, who.ctx),
        may_approve=who.can(Permission.MCP_WRITE),
    )


@router.post("/mcp-servers/pins/{server}/{tool}/approve")
async def approve_pin_form(
    request: Request, server: str, tool: str, who: Page = page(Permission.MCP_WRITE)
) -> Response:
    """Approve the definition reviewed on the page (refused if it changed again since)."""
    fields = await posted(request, who)
    reviewed = mcp_routes.Approve.model_validate({"sha256": fields.get("sha256") or None})
    await mcp_routes.approve_pin(server[:40], tool[:200], reviewed, who.services, who.ctx)
    return RedirectResponse("/mcp-servers", status_code=303)
