"""Pinned tool definitions: the rug-pull defence.

A tool's definition (its name, description and input schema) is hashed when it is first seen
and pinned as approved (trust on first use), or, with ``mcp_pin_first_use: false``, held until
someone approves it. When an upstream later serves a different definition for a pinned tool,
the tool is withheld from every caller, the change is audited (``mcp.pin.changed``) and logged,
and it stays withheld until a person with the security role (owner, admin, security of the
root organization) approves the new definition, which becomes the pin.

Pins are the server's, like the upstream registry: they live in the root organization's audit
chain and cache, and every replica reads the same table (a change is published to all).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from pilothouse.announce import Announcer
from pilothouse.audit import chain
from pilothouse.clock import Clock
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, Forbidden, NotFound
from pilothouse.mcp.tables import mcp_pins
from pilothouse.memo import IdentityMemo
from pilothouse.store.engine import Store
from pilothouse.store.notify import ALL, Invalidations

if TYPE_CHECKING:  # the MCP SDK is an extra: pins are read and approved without it
    import mcp_types as types

log = logging.getLogger(__name__)

KIND = "mcp_pins"
APPROVED, CHANGED, PENDING = "approved", "changed", "pending"


def definition_of(tool: types.Tool) -> dict[str, Any]:
    """What is pinned of a tool: its name, description and input schema."""
    return {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}


def digest(definition: dict[str, Any]) -> str:
    """The SHA-256 of a definition's canonical JSON."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Pin:
    """A pinned definition, and the one last seen if it differs."""

    server: str
    tool: str
    sha256: str
    status: str
    seen_sha256: str | None


class PinView(BaseModel):
    """A pin as people see it."""

    server: str
    tool: str
    status: str
    sha256: str
    definition: dict[str, Any]
    seen_sha256: str | None
    seen_definition: dict[str, Any] | None
    first_seen_at: datetime
    changed_at: datetime | None
    approved_by: str | None
    approved_at: datetime | None


class PinBook:
    """Every pin, cached, and the decision whether a tool as served now may be listed."""

    def __init__(
        self,
        store: Store,
        invalidations: Invalidations,
        clock: Clock,
        *,
        trust_first_use: bool,
        announcer: Announcer | None = None,
    ) -> None:
        self._store = store
        self._announcer = announcer
        self._invalidations = invalidations
        self._clock = clock
        self._trust_first_use = trust_first_use
        self._pins: dict[tuple[str, str], Pin] | None = None
        self._digests: IdentityMemo[tuple[dict[str, Any], str]] = IdentityMemo()
        self.root_org_id = ""
        invalidations.subscribe(self._forget)

    def _forget(self, kind: str, ref: str) -> None:
        if kind in (KIND, ALL):
            self._pins = None

    async def _all(self) -> dict[tuple[str, str], Pin]:
        pins = self._pins
        if pins is not None:
            return pins
        listening = self._invalidations.listening
        async with self._store.read() as conn:
            rows = (await conn.execute(select(mcp_pins))).mappings().all()
        pins = {
            (r["server"], r["tool"]): Pin(
                r["server"], r["tool"], r["sha256"], r["status"], r["seen_sha256"]
            )
            for r in rows
        }
        if listening:
            self._pins = pins
        return pins

    async def allowed(self, server: str, tools: list[types.Tool]) -> list[types.Tool]:
        """Those of ``tools`` whose definition is the pinned, approved one; a tool first seen
        is pinned, one whose definition changed is withheld (and the change recorded once)."""
        pins = await self._all()
        kept = []
        for tool in tools:
            definition, sha = self._digest(tool)
            pin = pins.get((server, tool.name))
            if pin is None:
                status = await self._first_seen(server, tool.name, definition, sha)
                if status == APPROVED:
                    kept.append(tool)
            elif pin.sha256 == sha and pin.status == APPROVED:
                kept.append(tool)
            elif pin.seen_sha256 != sha and pin.sha256 != sha:
                await self._changed(server, tool.name, definition, sha)
        return kept

    def _digest(self, tool: types.Tool) -> tuple[dict[str, Any], str]:
        """A tool's definition and its hash, worked out once per listed tool object."""
        found = self._digests.get(tool)
        if found is None:
            definition = definition_of(tool)
            found = self._digests.put(tool, (definition, digest(definition)))
        return found

    async def _first_seen(
        self, server: str, tool: str, definition: dict[str, Any], sha: str
    ) -> str:
        now = self._clock.now()
        status = APPROVED if self._trust_first_use else PENDING
        row = {
            "server": server,
            "tool": tool,
            "sha256": sha,
            "definition": json.dumps(definition, sort_keys=True),
            "status": status,
            "seen_sha256": None if status == APPROVED else sha,
            "seen_definition": None,
            "first_seen_at": now,
            "changed_at": None,
            "approved_by": None,
            "approved_at": now if status == APPROVED else None,
        }
        try:
            async with self._store.write() as conn:
                await conn.execute(insert(mcp_pins).values(**row))
                await self._event(conn, "mcp.pin.first_seen", server, tool, {"sha256": sha})
                await self._invalidations.publish(conn, KIND, f"{server}/{tool}")
        except IntegrityError:  # another replica pinned it first: its pin decides
            self._pins = None
            found = (await self._all()).get((server, tool))
            return APPROVED if found and found.sha256 == sha and found.status == APPROVED else ""
        return status

    async def _changed(self, server: str, tool: str, definition: dict[str, Any], sha: str) -> None:
        log.warning(
            "MCP tool %s__%s changed its definition: withheld until it is approved", server, tool
        )
        async with self._store.write() as conn:
            await conn.execute(
                update(mcp_pins)
                .where(mcp_pins.c.server == server, mcp_pins.c.tool == tool)
                .values(
                    status=CHANGED,
                    seen_sha256=sha,
                    seen_definition=json.dumps(definition, sort_keys=True),
                    changed_at=self._clock.now(),
                )
            )
            await self._event(conn, "mcp.pin.changed", server, tool, {"seen_sha256": sha})
            await self._invalidations.publish(conn, KIND, f"{server}/{tool}")
            if self._announcer is not None:
                self._announcer.after_commit(
                    conn,
                    f"changed MCP tool {server}__{tool}",
                    lambda form: changed_notice(server, tool, sha, form),
                )

    async def _event(
        self, conn: Any, action: str, server: str, tool: str, details: dict[str, Any]
    ) -> None:
        await chain.append(
            conn,
            self._clock,
            org_id=self.root_org_id,
            actor=chain.Actor("system", None),
            action=action,
            outcome="flagged" if action == "mcp.pin.changed" else "success",
            target_type="mcp_tool",
            target_id=f"{server}__{tool}",
            details={"server": server, "tool": tool, **details},
        )

    # --- people ---------------------------------------------------------------------------

    async def views(self) -> list[PinView]:
        """Every pin, by server and tool."""
        async with self._store.read() as conn:
            rows = (
                (await conn.execute(select(mcp_pins).order_by(mcp_pins.c.server, mcp_pins.c.tool)))
                .mappings()
                .all()
            )
        return [_view(r) for r in rows]

    async def approve(
        self, ctx: RequestContext, server: str, tool: str, sha256: str | None
    ) -> PinView:
        """Approve the definition last seen for a tool (``sha256``, if given, must be it: what
        the person reviewed is what is approved)."""
        if not ctx.principal.is_root_org:
            raise Forbidden("MCP servers are the server's: only the root organization approves")
        async with self._store.write() as conn:
            row = (
                (
                    await conn.execute(
                        select(mcp_pins).where(mcp_pins.c.server == server, mcp_pins.c.tool == tool)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound(f"no pin for {server}__{tool}")
            if row["status"] == APPROVED:
                raise Conflict(f"{server}__{tool} is approved as it is served")
            new = row["seen_sha256"] or row["sha256"]
            if sha256 is not None and sha256 != new:
                raise Conflict(
                    f"{server}__{tool} changed again: the definition to approve is {new}"
                )
            now = ctx.clock.now()
            changes = {
                "status": APPROVED,
                "sha256": new,
                "definition": row["seen_definition"] or row["definition"],
                "seen_sha256": None,
                "seen_definition": None,
                "approved_by": ctx.principal.actor_id,
                "approved_at": now,
            }
            await conn.execute(
                update(mcp_pins)
                .where(mcp_pins.c.server == server, mcp_pins.c.tool == tool)
                .values(**changes)
            )
            await ctx.audit(
                conn,
                "mcp.pin.approved",
                target_type="mcp_tool",
                target_id=f"{server}__{tool}",
                details={"server": server, "tool": tool, "sha256": new, "was": row["sha256"]},
            )
            await self._invalidations.publish(conn, KIND, f"{server}/{tool}")
        return _view({**row, **changes})


def changed_notice(server: str, tool: str, sha: str, form: str) -> dict[str, Any]:
    """The webhook body announcing a withheld tool: Pilothouse's JSON, or Slack's ``{text}``."""
    if form == "slack":
        return {
            "text": f"Pilothouse: MCP tool `{server}__{tool}` changed its definition and is"
            " withheld from every agent until someone with the security role approves it"
            f" (`pilothouse mcp pins`, then `pilothouse mcp approve {server} {tool}`)."
        }
    return {"type": "mcp.pin.changed", "server": server, "tool": tool, "seen_sha256": sha}


def _view(row: Any) -> PinView:
    seen = row["seen_definition"]
    return PinView(
        server=row["server"],
        tool=row["tool"],
        status=row["status"],
        sha256=row["sha256"],
        definition=json.loads(row["definition"]),
        seen_sha256=row["seen_sha256"],
        seen_definition=json.loads(seen) if seen else None,
        first_seen_at=row["first_seen_at"],
        changed_at=row["changed_at"],
        approved_by=row["approved_by"],
        approved_at=row["approved_at"],
    )


__all__ = ["PinBook", "PinView", "definition_of", "digest"]
