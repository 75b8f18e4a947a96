"""MCP upstream configuration: the servers ``/mcp`` aggregates and how to reach them.

Plain pydantic models (and secret references, themselves plain) with no other Pilothouse
imports, so ``settings`` can hold them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pilothouse.secrets.refs import SecretRef

Transport = Literal["stdio", "http", "sse"]
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
URL_PATTERN = r"^https?://[^\s/?#]+\S*$"


class McpServerConfig(BaseModel):
    """One upstream MCP server: a command run over stdio, or a URL (streamable HTTP or SSE)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        description="Lower-case letters, digits and hyphens, up to 40: callers see this server's"
        " tools as <name>__<tool>, so a name never holds an underscore.",
    )
    transport: Transport = Field(
        description="stdio (Pilothouse runs command and speaks MCP on its stdin/stdout), http"
        " (streamable HTTP at url) or sse (the legacy HTTP+SSE transport at url)."
    )
    command: str | None = Field(
        None, description="stdio: the executable, looked up on PATH unless it is a path."
    )
    args: list[str] = Field(default_factory=list, description="stdio: the command's arguments.")
    env: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description="stdio: environment variables added to a minimal inherited set (HOME, PATH,"
        ' USER, ...); a value may be {"$secret": name}, injected when the process starts.',
    )
    cwd: str | None = Field(None, description="stdio: the working directory of the process.")
    url: str | None = Field(
        None,
        pattern=URL_PATTERN,
        description="http and sse: the endpoint, http:// or https:// (for sse, the event-stream"
        " URL, usually ending in /sse).",
    )
    headers: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description='http and sse: headers sent on every request; a value may be {"$secret":'
        " name}. The agent's own credentials are never forwarded.",
    )
    timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="How long one request (a tool call, a page of a listing) may wait for its"
        " answer; a stdio server that misses it is restarted.",
    )
    connect_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long starting the process or opening the connection, with the MCP"
        " handshake, may take.",
    )
    restart_backoff_seconds: float = Field(
        0.5,
        gt=0,
        description="The wait before the first reconnection after a failure; each next one waits"
        " twice as long, up to restart_backoff_max_seconds.",
    )
    prices: dict[str, int] = Field(
        default_factory=dict,
        description="What one call of a tool costs, in micro-dollars (1,000,000 is one dollar),"
        ' by the upstream\'s tool name; "*" prices every tool not named. A priced call is'
        " reserved against the caller's budgets before it is forwarded (a hard budget it would"
        " pass refuses it) and settled as a usage row whose model is mcp:<server>__<tool>."
        " Unpriced tools make no usage row.",
    )
    restart_backoff_max_seconds: float = Field(
        30.0,
        gt=0,
        description="The longest wait between reconnections; a connection that stays up this"
        " long starts the next series from restart_backoff_seconds again.",
    )

    @model_validator(mode="after")
    def _fits_transport(self) -> McpServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError(f"MCP server {self.name!r}: a stdio server needs a command")
            if self.url is not None or self.headers:
                raise ValueError(
                    f"MCP server {self.name!r}: url and headers are for http and sse servers;"
                    " a stdio server takes command, args, env and cwd"
                )
        else:
            if not self.url:
                raise ValueError(
                    f"MCP server {self.name!r}: an {self.transport} server needs a url"
                )
            if self.command is not None or self.args or self.env or self.cwd is not None:
                raise ValueError(
                    f"MCP server {self.name!r}: command, args, env and cwd are for stdio servers;"
                    f" an {self.transport} server takes url and headers"
                )
        if self.restart_backoff_max_seconds < self.restart_backoff_seconds:
            raise ValueError(
                f"MCP server {self.name!r}: restart_backoff_max_seconds is shorter than"
                " restart_backoff_seconds"
            )
        for tool, price in self.prices.items():
            if price < 0:
                raise ValueError(
                    f"MCP server {self.name!r}: the price of {tool!r} is negative ({price})"
                )
        return self

    def price_of(self, tool: str) -> int | None:
        """The micro-dollars one call of the upstream's ``tool`` costs (None: unpriced)."""
        found = self.prices.get(tool)
        return self.prices.get("*") if found is None else found

    @property
    def secret_refs(self) -> dict[str, SecretRef]:
        """The secrets this server uses: ``env:<NAME>`` per variable, ``header:<name>`` each."""
        refs = {f"env:{k}": v for k, v in self.env.items() if isinstance(v, SecretRef)}
        refs.update(
            (f"header:{k.lower()}", v) for k, v in self.headers.items() if isinstance(v, SecretRef)
        )
        return refs
