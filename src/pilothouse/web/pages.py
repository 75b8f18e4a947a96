"""How a dashboard page is served: who is signed in, what they may see, the CSRF check of
every form, rendering, and errors shown as pages.

A page names the permission of the API route it mirrors (``page(Permission.X)``): the same
check, the same ``access.denied`` audit event when it fails, the same domain functions
behind it. A form is accepted only with its session's CSRF token (``posted``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from pilothouse.api.errors import audit_denied
from pilothouse.context import RequestContext
from pilothouse.errors import CsrfFailed, Forbidden, PilothouseError, ValidationFailed
from pilothouse.identity.roles import Permission
from pilothouse.services import Services
from pilothouse.web.auth import COOKIE, Signed, WebAuth, same

templates = Environment(
    loader=PackageLoader("pilothouse.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _usd(value: Any) -> str:
    """Dollars for people: a decimal string or a number, to the cent; below a dollar, to two
    significant digits (at most eight places), so a cheap call never reads as $0.00."""
    amount = float(value or 0)
    places = 2
    while amount and places < 8 and abs(amount) < 10 ** (1 - places):
        places += 1
    return f"${amount:,.{places}f}"


def _when(value: datetime | None) -> str:
    """A moment, in UTC, to the second."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.filters["usd"] = _usd
templates.filters["when"] = _when

# The navigation, in order: (path, label, the permission a person needs to see it).
NAV: list[tuple[str, str, Permission | None]] = [
    ("/", "Overview", None),
    ("/spend", "Spend", Permission.USAGE_READ),
    ("/sessions", "Sessions", Permission.SESSIONS_READ),
    ("/budgets", "Budgets", Permission.BUDGETS_READ),
    ("/approvals", "Approvals", Permission.APPROVALS_READ),
    ("/policy", "Policy", Permission.POLICY_READ),
    ("/keys", "Keys", Permission.KEYS_OWN),
    ("/people", "People", Permission.USERS_READ),
    ("/mcp-servers", "MCP", Permission.MCP_READ),
    ("/audit", "Audit", Permission.AUDIT_READ),
]


class SignInNeeded(Exception):
    """Nobody is signed in: a page sends them to sign in, a fragment answers 401."""


@dataclass(frozen=True, slots=True)
class Page:
    """A request by a signed-in person: who, and the context the domain functions take."""

    request: Request
    signed: Signed
    ctx: RequestContext

    @property
    def services(self) -> Services:
        """The server's services."""
        services: Services = self.request.app.state.services
        return services

    def can(self, permission: Permission) -> bool:
        """Whether this person holds ``permission`` (to show or hide what they cannot do)."""
        return self.signed.principal.can(permission)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        """``template`` rendered with ``values`` and what every page shows."""
        return render(self.request, template, status, page=self, **values)


def web_auth(request: Request) -> WebAuth:
    """The server's sign-in service."""
    auth = request.app.state.services.web
    assert auth is not None
    return auth  # type: ignore[no-any-return]


async def signed_in(request: Request) -> Signed:
    """The person the session cookie signs in (else SignInNeeded)."""
    signed = await web_auth(request).signed(request.cookies.get(COOKIE))
    if signed is None:
        raise SignInNeeded
    request.state.principal = signed.principal  # what a refusal's audit event names
    return signed


def page(permission: Permission | None = None) -> Any:
    """A dependency: the Page of a signed-in person holding ``permission`` (else Forbidden,
    audited as the API audits it)."""

    async def dependency(request: Request, signed: Signed = Depends(signed_in)) -> Page:
        if permission is not None and not signed.principal.can(permission):
            raise Forbidden(
                f"this needs the {permission.value} permission, which your role lacks",
                permission=permission.value,
            )
        services: Services = request.app.state.services
        ctx = RequestContext(signed.principal, request.state.request_id, services.clock)
        return Page(request, signed, ctx)

    return Depends(dependency)


async def posted(request: Request, form_page: Page) -> dict[str, str]:
    """The fields of a form posted by ``form_page``'s person, after its CSRF check: the
    session's token in the ``csrf`` field, and (if the browser says) this site as the origin."""
    check_origin(request)
    fields = await form_fields(request)
    if not same(fields.get("csrf"), form_page.signed.csrf):
        raise CsrfFailed("the form's CSRF token is missing or wrong: reload the page and retry")
    return fields


async def form_fields(request: Request) -> dict[str, str]:
    """A posted form's text fields; a NUL in any is refused (no store keeps one)."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if any("\x00" in v for v in fields.values()):
        raise ValidationFailed("a form field holds a NUL character")
    return fields


def check_origin(request: Request) -> None:
    """A browser's Origin (or Referer), when it sends one, must be this site: the host it
    asked for, or ``public_url``'s (a proxy in front may pass on another Host)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return
    services: Services = request.app.state.services
    ours = {request.headers.get("host", "")}
    if services.settings.public_url:
        ours.add(urlsplit(services.settings.public_url).netloc)
    if origin == "null" or urlsplit(origin).netloc not in ours:
        raise CsrfFailed("the form was posted from another site")


def secure_cookies(request: Request) -> bool:
    """Whether cookies get ``Secure``: the request came over TLS, or the public URL is https."""
    services: Services = request.app.state.services
    public = services.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """``template`` rendered as a page (never cached: pages hold what the person may see)."""
    body = templates.get_template(template).render(request=request, nav=NAV, **values)
    return HTMLResponse(
        body,
        status_code=status,
        headers={
            "cache-control": "no-store",
            "x-frame-options": "DENY",
            "content-security-policy": (
                "default-src 'self'; img-src 'self' data:; style-src 'self';"
                " script-src 'self'; frame-ancestors 'none'; form-action 'self'"
            ),
            "referrer-policy": "same-origin",
            "x-content-type-options": "nosniff",
        },
    )


class WebRoute(APIRoute):
    """A dashboard route: errors are pages (or, for a fragment, a status), not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            where = f"{request.scope.get('path', '')}?{request.url.query}"
            if "\x00" in where or "%00" in where:
                message = "the address holds a NUL character"
                return render(request, "error.html", 400, title=_title(400), message=message)
            try:
                return await handler(request)
            except SignInNeeded:
                if request.method == "GET" and "fragment" not in request.query_params:
                    target = quote(request.url.path + _query(request), safe="/?=&")
                    return RedirectResponse(f"/login?next={target}", status_code=303)
                return render(
                    request,
                    "error.html",
                    401,
                    title="Signed out",
                    message=("Your sign-in has ended: sign in again."),
                )
            except RequestValidationError as exc:
                problem = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in problem.get("loc", ()))
                message = f"{where}: {problem.get('msg', 'invalid')}"
                return render(request, "error.html", 422, title=_title(422), message=message)
            except PilothouseError as exc:
                if isinstance(exc, Forbidden) and getattr(request.state, "principal", None):
                    try:
                        await audit_denied(request, exc)
                    except PilothouseError as audit_exc:  # not recorded: refuse with that
                        exc = audit_exc
                return render(
                    request, "error.html", exc.status, title=_title(exc.status), message=exc.message
                )

        return route


def _query(request: Request) -> str:
    query = request.url.query
    return f"?{query}" if query else ""


def _title(status: int) -> str:
    return {
        400: "That did not work",
        401: "Signed out",
        403: "Not allowed",
        404: "Not found",
        409: "Already changed",
        422: "That did not work",
        429: "Slow down",
    }.get(status, "Something failed")
