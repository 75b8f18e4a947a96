"""MCP routes under /api/v1: the upstream servers and their state, every tool they serve with
its pin, and approving a changed (or new) tool definition."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from pilothouse.api.deps import ERROR_RESPONSES, require, services_of
from pilothouse.api.types import Body, ShortText
from pilothouse.context import RequestContext
from pilothouse.identity.roles import Permission
from pilothouse.mcp.pins import PinBook, PinView, definition_of, digest
from pilothouse.services import Services

router = APIRouter(prefix="/api/v1/mcp", responses=ERROR_RESPONSES, tags=["mcp"])

Svc = Annotated[Services, Depends(services_of)]
Reader = Annotated[RequestContext, require(Permission.MCP_READ)]
Writer = Annotated[RequestContext, require(Permission.MCP_WRITE)]
ServerName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
ToolName = ShortText  # the upstream's name for the tool


class ServerView(BaseModel):
    """An upstream server and its state."""

    name: str
    transport: str
    state: str
    restarts: int
    last_error: str | None
    tools: int | None


class ToolView(BaseModel):
    """A tool an upstream serves now, as callers would name it, with its pin's state."""

    name: str
    server: str
    tool: str
    description: str | None
    sha256: str
    pin: str | None


class Approve(Body):
    """The definition a person reviewed."""

    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="the SHA-256 shown for the definition: refused (409) if the upstream has"
        " changed it again since",
    )


def pins_of(svc: Services) -> PinBook:
    """The running PinBook."""
    assert svc.pins is not None
    return svc.pins


@router.get("/servers", summary="List MCP upstream servers")
async def list_servers(svc: Svc, ctx: Reader) -> list[ServerView]:
    """Every configured upstream and its state (ready, starting, restarting, stopped)."""
    if svc.mcp is None:
        return []
    served = await svc.mcp.registry.tools()
    assert svc.secrets is not None
    await svc.secrets.fresh()
    redactor = svc.secrets.redactor  # a server's last error may quote what it was given
    views = []
    for upstream in svc.mcp.registry.all():
        status: Any = upstream.status
        views.append(
            ServerView(
                name=upstream.config.name,
                transport=upstream.config.transport,
                state=str(status.state),
                restarts=int(status.restarts),
                last_error=redactor.redact(status.last_error) if status.last_error else None,
                tools=len(served[upstream.config.name]) if upstream.config.name in served else None,
            )
        )
    return views


@router.get("/tools", summary="List the tools MCP upstreams serve")
async def list_tools(svc: Svc, ctx: Reader) -> list[ToolView]:
    """Every tool of every ready upstream, with the SHA-256 of its definition as served now and
    its pin's state (approved, changed: withheld, pending: never approved)."""
    if svc.mcp is None:
        return []
    pins = {(p.server, p.tool): p for p in await pins_of(svc).views()}
    views = []
    for server, tools in (await svc.mcp.registry.tools()).items():
        for tool in tools:
            pin = pins.get((server, tool.name))
            views.append(
                ToolView(
                    name=f"{server}__{tool.name}",
                    server=server,
                    tool=tool.name,
                    description=tool.description,
                    sha256=digest(definition_of(tool)),
                    pin=pin.status if pin else None,
                )
            )
    return views


@router.get("/pins", summary="List pinned tool definitions")
async def list_pins(svc: Svc, ctx: Reader) -> list[PinView]:
    """Every pin: the approved definition and, for a changed tool, the one served instead."""
    return await pins_of(svc).views()


@router.post("/pins/{server}/{tool}/approve", summary="Approve a tool's definition")
async def approve_pin(
    server: ServerName, tool: ToolName, body: Approve, svc: Svc, ctx: Writer
) -> PinView:
    """Approve the definition an upstream serves now for a withheld (changed or pending) tool:
    it becomes the pin and the tool is listed again, on every replica. Root organization
    only; 409 if it is approved already or changed again since ``sha256``."""
    return await pins_of(svc).approve(ctx, server, tool, body.sha256)
