"""Services: the state of a running Pilothouse, built once at start-up and passed explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from starlette.types import Scope

from pilothouse.audit import chain
from pilothouse.budgets.alerts import Alerts
from pilothouse.budgets.ledger import BudgetBook, Ledger
from pilothouse.clock import Clock, SystemClock
from pilothouse.errors import (
    ConfigError,
    Forbidden,
    PilothouseError,
    StoreUnavailable,
    Unauthenticated,
)
from pilothouse.gateway import rollups
from pilothouse.gateway.access import ModelAccess
from pilothouse.gateway.calls import Gateway
from pilothouse.gateway.prices import PriceBook
from pilothouse.gateway.providers.anthropic import AnthropicProvider
from pilothouse.gateway.providers.demo import DemoProvider
from pilothouse.gateway.providers.http import HttpClient
from pilothouse.gateway.providers.openai import OpenAIProvider
from pilothouse.gateway.providers.openai_compatible import OpenAICompatibleProvider
from pilothouse.gateway.routing import Router
from pilothouse.identity.auth import Authenticator, KeyCache, LastUsed
from pilothouse.identity.bootstrap import Bootstrap, bootstrap
from pilothouse.identity.principal import Principal
from pilothouse.mcp.config import McpServerConfig
from pilothouse.mcp.pins import PinBook
from pilothouse.policy import versions
from pilothouse.policy.approvals import Approvals
from pilothouse.policy.checks import Checker
from pilothouse.policy.scan import Scanner
from pilothouse.policy.versions import PolicyBook
from pilothouse.secrets.backends import external_backends
from pilothouse.secrets.book import SecretBook
from pilothouse.secrets.crypto import Keyring, load_keyring, parse_keyring
from pilothouse.secrets.detect import CredentialDetector
from pilothouse.settings import Settings, inherited_environment
from pilothouse.store import migrate
from pilothouse.store.engine import Store
from pilothouse.store.notify import Invalidations
from pilothouse.telemetry import Telemetry
from pilothouse.web.auth import WebAuth
from pilothouse.web.oidc import Oidc
from pilothouse.web.passwords import set_owner_password

if TYPE_CHECKING:
    from pilothouse.mcp.gateway import McpGateway

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
STATISTICS_SECONDS = 3600.0
"""How often the roll-up pass refreshes SQLite's planner statistics (``rollups``)."""
WEB_SESSIONS_SECONDS = 3600.0
"""How often ended and expired dashboard sessions are deleted."""


@dataclass
class Services:
    """Everything a request handler may need; no module globals."""

    settings: Settings
    store: Store
    clock: Clock
    invalidations: Invalidations
    key_cache: KeyCache
    last_used: LastUsed
    authenticator: Authenticator
    telemetry: Telemetry
    gateway: Gateway | None = None
    ledger: Ledger | None = None
    alerts: Alerts | None = None
    checker: Checker | None = None
    secrets: SecretBook | None = None
    mcp: McpGateway | None = None
    pins: PinBook | None = None
    web: WebAuth | None = None
    oidc: Oidc | None = None
    root_org_id: str = ""
    bootstrap_result: Bootstrap | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _analyzed_at: float | None = None  # when SQLite's planner statistics were last refreshed

    async def start(self, *, migrate_store: bool = True) -> None:
        """Migrate, bootstrap, and begin background work."""
        if migrate_store:
            await migrate.upgrade(self.store)
        async with self.store.write() as conn:
            # Replicas starting together on an empty database must make one root, not two.
            await migrate.hold_startup_lock(self.store, conn)
            self.bootstrap_result = await bootstrap(
                conn,
                self.clock,
                org_name=self.settings.root_org_name,
                admin_key=(
                    self.settings.admin_key.get_secret_value() if self.settings.admin_key else None
                ),
            )
        self.root_org_id = self.bootstrap_result.org_id
        given = self.settings.admin_password
        if self.bootstrap_result.created and given is not None:  # the first owner's password
            await set_owner_password(
                self.store, self.root_org_id, given.get_secret_value(), self.clock.now()
            )
        await self.invalidations.start()
        if self.secrets is not None:
            await self.secrets.start()
        if self.pins is not None:
            self.pins.root_org_id = self.root_org_id
        if self.mcp is not None:
            await self.mcp.start()
        if self.ledger is not None:
            self.ledger.start()
        self.telemetry.start()
        self._every("last-used", self.settings.last_used_flush_seconds, self._flush_last_used)
        self._every("usage roll-up", self.settings.usage_rollup_seconds, self._roll_up)
        if self.web is not None:
            self._every("ended web sessions", WEB_SESSIONS_SECONDS, self.web.forget_ended)
        if self.ledger is not None:
            ttl = self.settings.gateway.reservation_ttl_seconds
            self._every("reservation renewal", ttl / 3, self.ledger.keep_alive)
            self._every("reservation sweep", self.settings.gateway.sweep_seconds, self.ledger.sweep)
        if self.alerts is not None:
            self._every("budget alerts", self.settings.alert_check_seconds, self._alert)
        if self.checker is not None:
            self.checker.book.root_org_id = self.root_org_id
            self._every("approval expiry", 5.0, self.checker.approvals.expire_due)
            if self.settings.policy_file is not None:
                await self._sync_policy_file()
                self._every(
                    "policy file", self.settings.policy_file_poll_seconds, self._sync_policy_file
                )

    async def _roll_up(self) -> None:
        summed = await rollups.roll_up(self.store, stopping=self._stopping.is_set)
        if summed:
            log.debug("summed %d usage rows into the daily roll-ups", summed)
        moment = time.monotonic()
        if self._analyzed_at is None or moment - self._analyzed_at >= STATISTICS_SECONDS:
            await rollups.refresh_statistics(self.store)
            self._analyzed_at = moment

    async def usage_settled(self) -> None:
        """Wait for the usage rows and settlements this replica has queued but not yet
        written (``Ledger.settle``): a read of usage, spend or budgets then sees every call
        this replica has answered."""
        if self.ledger is not None:
            await self.ledger.settled()

    async def close(self) -> None:
        """Stop background work, write what is pending, close connections."""
        # Loops finish the round they are in (a cancelled database call can leave a
        # connection half made); one that does not within the bound is cancelled.
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ledger is not None:
            await self.ledger.stop()
        if self.gateway is not None:
            await self.gateway.aclose()
        if self.mcp is not None:
            await self.mcp.stop()
        if self.checker is not None:
            await self.checker.recorder.stop()
            await self.checker.approvals.aclose()
        if self.secrets is not None:
            await self.secrets.aclose()
        await self.telemetry.stop()
        with contextlib.suppress(StoreUnavailable):
            await self.last_used.flush(self.store)
        await self.invalidations.stop()
        await self.store.dispose()

    def _every(self, what: str, seconds: float, work: Callable[[], Awaitable[Any]]) -> None:
        """Run ``work`` every ``seconds`` until ``close``; a store outage is logged, not fatal,
        and so is any other failure (with its traceback): one bad round does not stop the
        work for the life of the process."""

        async def loop() -> None:
            while True:
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
                    return
                except TimeoutError:
                    pass
                try:
                    await work()
                except StoreUnavailable as exc:
                    log.warning("%s failed: %s", what, exc)
                except Exception:
                    log.exception("%s failed; trying again in %s s", what, seconds)

        self._tasks.append(asyncio.create_task(loop(), name=what))

    async def _sync_policy_file(self) -> None:
        assert self.settings.policy_file is not None
        await versions.sync_file(
            self.store, self.invalidations, self.clock, self.root_org_id, self.settings.policy_file
        )

    async def upstream_credentials(self, server: McpServerConfig) -> dict[str, str]:
        """The secrets an MCP upstream is configured with, for its connection (the caller's
        grants are checked per call)."""
        assert self.secrets is not None
        return {
            where: await self.secrets.configured(
                self.root_org_id, ref.secret, f"MCP server {server.name!r} ({where})"
            )
            for where, ref in server.secret_refs.items()
        }

    async def _flush_last_used(self) -> None:
        await self.last_used.flush(self.store)

    async def _alert(self) -> None:
        """Fire budget alerts for thresholds crossed and deliver those that are due."""
        assert self.alerts is not None
        await self.alerts.check()
        await self.alerts.deliver()

    async def authenticate(
        self, headers: Mapping[str, str], scope: Scope, request_id: str
    ) -> Principal:
        """Authenticate a request; a refusal is audited before it is raised.

        If the refusal cannot be audited, the store's error is raised instead (fail closed).
        """
        try:
            return await self.authenticator.authenticate(headers)
        except (Unauthenticated, Forbidden) as exc:
            await self.audit_auth_failure(exc, scope, request_id)
            raise

    async def audit_auth_failure(self, exc: PilothouseError, scope: Scope, request_id: str) -> None:
        """Record a refused authentication in the key's organization (or the root one)."""
        org_id = exc.context.get("org_id") or self.root_org_id
        prefix = exc.context.get("key_prefix")
        client = scope.get("client")
        details: dict[str, Any] = {
            "reason": exc.code,
            "key": prefix,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "client": client[0] if client else None,
        }
        async with self.store.write() as conn:
            await chain.append(
                conn,
                self.clock,
                org_id=org_id,
                actor=chain.Actor("anonymous", None),
                action="auth.failed" if exc.status == 401 else "auth.denied",
                outcome="denied",
                target_type="key" if prefix else None,
                target_id=prefix,
                request_id=request_id,
                details=details,
            )


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    """Wire the services for ``settings`` (nothing is connected until ``start``)."""
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.resolved_database_url())
    the_clock = clock or SystemClock()
    invalidations = Invalidations(store, reconnect_seconds=settings.invalidation_reconnect_seconds)
    cache = KeyCache(settings.key_cache_ttl_seconds, invalidations)
    last_used = LastUsed()
    authenticator = Authenticator(store, the_clock, cache, last_used)
    services = Services(
        settings=settings,
        store=store,
        clock=the_clock,
        invalidations=invalidations,
        key_cache=cache,
        last_used=last_used,
        authenticator=authenticator,
        telemetry=Telemetry(settings),
    )
    budgets = BudgetBook(store, invalidations)
    services.ledger = Ledger(store, the_clock, budgets, settings.gateway.reservation_ttl_seconds)
    services.alerts = Alerts(store, the_clock, budgets, settings.alert_webhooks)
    book = PolicyBook(store, invalidations, settings.policy_file)
    services.checker = Checker(
        store,
        book,
        Approvals(
            store,
            the_clock,
            invalidations,
            book,
            settings.approval_webhooks,
            settings.public_url,
        ),
        Scanner(),
        invalidations,
        the_clock,
        settings.key_cache_ttl_seconds,
    )
    access = ModelAccess(store, settings.key_cache_ttl_seconds)
    services.secrets = SecretBook(
        store,
        _keyring(settings),
        external_backends(
            environ=inherited_environment(), base_dir=Path.cwd(), vault=settings.vault
        ),
        access,
        invalidations,
        the_clock,
        config_values=_config_secrets(settings),
        protected=[settings.resolved_master_key_file(), settings.data_dir],
    )
    services.checker.secrets = services.secrets
    services.checker.detector = CredentialDetector()
    services.web = WebAuth(store, the_clock, settings.web_session_hours)
    services.oidc = Oidc(settings.oidc) if settings.oidc is not None else None
    services.pins = PinBook(
        store,
        invalidations,
        the_clock,
        trust_first_use=settings.mcp_pin_first_use,
        announcer=services.checker.approvals.announcer,  # security's channel: approval_webhooks
    )
    if settings.mcp_servers:
        services.mcp = _mcp_gateway(services, services.pins)
    prices = PriceBook.shipped(settings.gateway.default_price)
    http = HttpClient()  # one connection pool for every HTTP provider
    services.gateway = Gateway(
        services,
        Router(settings.models, settings.gateway, prices),
        {
            "demo": DemoProvider(),
            "openai": OpenAIProvider(http),
            "anthropic": AnthropicProvider(http),
            "openai-compatible": OpenAICompatibleProvider(http),
        },
        prices,
        access,
        services.ledger,
    )
    return services


def _mcp_gateway(services: Services, pins: PinBook) -> McpGateway:
    """The MCP endpoint over the configured upstreams (the SDK is an extra: imported here)."""
    try:
        from pilothouse.mcp.gateway import McpGateway
        from pilothouse.mcp.upstreams import UpstreamRegistry
    except ImportError as exc:
        raise ConfigError(
            f"mcp_servers needs the MCP SDK ({exc.name} is missing): pip install 'pilothouse[mcp]'"
        ) from exc
    registry = UpstreamRegistry(services.settings.mcp_servers, services.upstream_credentials)
    return McpGateway(services, registry, pins)


def _keyring(settings: Settings) -> Keyring:
    """The master keys: given whole in settings, or read from their file (the default file is
    made on first start)."""
    if settings.master_key is not None:
        return parse_keyring(settings.master_key.get_secret_value(), "master_key")
    return load_keyring(
        settings.resolved_master_key_file(), create=settings.master_key_file is None
    )


def _config_secrets(settings: Settings) -> list[str]:
    """The secret values settings hold, redacted like the store's."""
    vault = settings.vault.token if settings.vault else None
    oidc = settings.oidc.client_secret if settings.oidc else None
    held: list[object] = [
        settings.admin_key,
        settings.admin_password,
        settings.master_key,
        vault,
        oidc,
    ]
    held += [d.api_key for m in settings.models for d in m.deployments]
    return [v.get_secret_value() for v in held if isinstance(v, SecretStr)]
