"""Wiring only: build the ASGI app, mount each domain's routes, run Services in the lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from pilothouse import __version__
from pilothouse.api import errors
from pilothouse.api.middleware import ApiMiddleware
from pilothouse.audit.routes import router as audit_router
from pilothouse.budgets.routes import router as budgets_router
from pilothouse.clock import Clock
from pilothouse.errors import NotFound, PilothouseError
from pilothouse.gateway.asgi import GatewayASGI
from pilothouse.gateway.spend_routes import router as spend_router
from pilothouse.identity.routes import router as identity_router
from pilothouse.mcp.routes import router as mcp_router
from pilothouse.policy.hooks import router as hooks_router
from pilothouse.policy.routes import hot_router as checks_router
from pilothouse.policy.routes import router as policy_router
from pilothouse.secrets.routes import router as secrets_router
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from pilothouse.store import migrate
from pilothouse.web.routes import router as web_router

MCP_PATHS = ("/mcp", "/mcp/")


class PilothouseApp(FastAPI):
    """The FastAPI app, with the LLM gateway's ``/v1/`` calls dispatched before any framework
    layer: they skip the admin API's middleware and route matching (about 40 µs a call, see
    bench/README.md)."""

    gateway: ASGIApp | None = None
    mcp: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if self.gateway is not None and scope["type"] == "http" and scope["path"][:4] == "/v1/":
            await self.gateway(scope, receive, send)
            return
        if self.mcp is not None and scope["type"] == "http" and scope["path"] in MCP_PATHS:
            await self.mcp(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def build_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    services: Services | None = None,
    on_started: Callable[[Services], Awaitable[None]] | None = None,
) -> FastAPI:
    """The Pilothouse ASGI application for ``settings``."""
    svc = services or build_services(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        # Everything made at start-up lives as long as the process: take it out of the garbage
        # collector's full passes, which otherwise walk it on every one (the p99 tail measured
        # in bench/README.md).
        gc.freeze()
        if on_started is not None:
            await on_started(svc)
        try:
            yield
        finally:
            await svc.close()

    app = PilothouseApp(
        title="Pilothouse",
        version=__version__,
        summary="The control plane for software agents.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.add_middleware(ApiMiddleware)
    errors.install(app)
    app.include_router(hooks_router)  # the agents' hot routes first (see policy/routes.py)
    app.include_router(checks_router)
    app.include_router(identity_router)
    app.include_router(audit_router)
    app.include_router(spend_router)
    app.include_router(budgets_router)
    app.include_router(policy_router)
    app.include_router(secrets_router)
    app.include_router(mcp_router)
    # The dashboard: its pages at / (which still answers a client's probe of its base URL:
    # Claude Code sends HEAD there), its stylesheet and script under /static.
    app.include_router(web_router)
    app.mount("/static", StaticFiles(packages=[("pilothouse.web", "static")]), name="static")
    _health_routes(app)
    _metrics_route(app)
    assert svc.gateway is not None
    app.gateway = GatewayASGI(svc.gateway)
    app.mcp = svc.mcp
    return app


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="The store answers and is migrated",
        responses={503: {"model": errors.ErrorEnvelope}},
    )
    async def readyz(request: Request) -> Any:
        """The store answers and its migrations are current."""
        svc: Services = request.app.state.services
        try:
            current = await migrate.current_revision(svc.store)
        except PilothouseError as exc:
            return errors.error_response(exc, errors.request_id_of(request))
        head = migrate.head_revision()
        if current != head:
            return JSONResponse(
                {
                    "error": {
                        "code": "migrations_pending",
                        "message": f"the store is at migration {current}, the code needs {head}",
                    }
                },
                status_code=503,
            )
        return {"status": "ready", "migration": current}


def _metrics_route(app: FastAPI) -> None:
    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics; unauthenticated, as scrapers expect (404 when disabled)."""
        svc: Services = request.app.state.services
        if not svc.settings.metrics_enabled:
            raise NotFound("metrics are disabled: set metrics_enabled to true to serve them")
        body, content_type = svc.telemetry.metrics(request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})
