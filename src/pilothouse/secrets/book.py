"""The secrets a replica knows: every organization's secrets and grants, their values opened
once, and the redactor built from every value it knows.

The book is read whole at start-up and again after any change (an invalidation, local or from
another replica). Redaction must know every value, so a book that is stale waits for its re-read
before answering (``fresh``), and a re-read that fails refuses (fail closed) until one succeeds.

Values come from the built-in store (sealed in ``secrets``, opened with the keyring) or from an
external backend (environment, file, Vault), read when the book is read (Vault: when first
used, then cached by its backend). Values that settings hold (provider keys given as ``$env``,
the admin key, the Vault token) are redacted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from pilothouse.clock import Clock
from pilothouse.errors import ConfigError, PilothouseError, SecretNotGranted
from pilothouse.gateway.access import ModelAccess
from pilothouse.identity.principal import Principal
from pilothouse.secrets.backends import FileBackend, SecretBackend, SecretUnavailable
from pilothouse.secrets.crypto import Keyring, Sealed, SecretCorrupt
from pilothouse.secrets.logs import RedactedLogs
from pilothouse.secrets.redact import MIN_SECRET_LENGTH, Redactor
from pilothouse.secrets.tables import secret_grants, secret_keys, secrets
from pilothouse.store.engine import Store
from pilothouse.store.notify import ALL, Invalidations

log = logging.getLogger(__name__)

KIND = "secrets"  # the invalidation every change publishes
RELOAD_TIMEOUT_S = 10.0
KEY_CHECK = b"pilothouse master key check"
BUILTIN = "builtin"


def sealing_context(org_id: str, secret_id: str) -> str:
    """What a secret's value is sealed as: its organization and id, so a ciphertext copied to
    another row does not open."""
    return f"{org_id}/{secret_id}"


@dataclass(frozen=True, slots=True)
class Grant:
    """Who may use a secret, and how."""

    id: str
    subject: str
    use: str  # inject | lease
    ttl_seconds: int | None


@dataclass(slots=True)
class Entry:
    """One secret as the book holds it."""

    id: str
    org_id: str
    name: str
    backend: str
    ref: str | None
    version: int
    grants: list[Grant] = field(default_factory=list)
    value: str | None = None
    problem: PilothouseError | None = None  # why the value cannot be had

    def grants_for(self, use: str) -> list[Grant]:
        """The grants of one use."""
        return [g for g in self.grants if g.use == use]


class SecretBook:
    """Every secret's metadata, grants and value, kept fresh across replicas."""

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        backends: Mapping[str, SecretBackend],
        access: ModelAccess,
        invalidations: Invalidations,
        clock: Clock,
        config_values: Iterable[str] = (),
        protected: Iterable[Path] = (),
    ) -> None:
        self._store = store
        self.keyring = keyring
        self.backends = dict(backends)
        self._access = access
        self._clock = clock
        self._config_values = [v for v in config_values if len(v) >= MIN_SECRET_LENGTH]
        self._protected = [_real(p) for p in protected]
        self._entries: dict[tuple[str, str], Entry] = {}
        self.redactor = redactor_of(dict.fromkeys(self._config_values, "config"))
        self._wanted, self._have = 1, 0  # generations: changes seen, and read
        self._closed = False
        self._lock = asyncio.Lock()
        self._reload: asyncio.Task[None] | None = None
        self.logs = RedactedLogs(lambda: self.redactor)
        invalidations.subscribe(self._forget)

    # --- keeping fresh ----------------------------------------------------------------------

    async def start(self) -> None:
        """Prove the keyring is the store's, read every secret, and redact log lines."""
        await self.verify_keys()
        await self.fresh()
        self.logs.install()

    def _forget(self, kind: str, ref: str) -> None:
        if kind not in (KIND, ALL):
            return
        self._wanted += 1
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (shutting down): the next ``fresh`` re-reads
            return
        if self._reload is None or self._reload.done():
            self._reload = loop.create_task(self._quiet_reload(), name="secrets reload")

    async def _quiet_reload(self) -> None:
        try:
            await self.fresh()
        except PilothouseError as exc:  # the next use re-reads, and refuses meanwhile
            log.warning("secrets not re-read: %s", exc)

    async def fresh(self) -> None:
        """Re-read the book if something changed since it was read (raises if it cannot be);
        a caller that comes while a re-read runs waits for it."""
        if self._have == self._wanted:
            return
        async with self._lock:
            wanted = self._wanted  # a change during the read asks for another one
            if self._have == wanted:
                return
            await self._read()
            self._have = wanted

    async def _read(self) -> None:
        async with self._store.read() as conn:
            rows = (await conn.execute(select(secrets))).mappings().all()
            grant_rows = (await conn.execute(select(secret_grants))).mappings().all()
        entries: dict[tuple[str, str], Entry] = {}
        by_id: dict[str, Entry] = {}
        for row in rows:
            entry = Entry(
                row["id"], row["org_id"], row["name"], row["backend"], row["ref"], row["version"]
            )
            if entry.backend == BUILTIN:
                self._open(entry, row)
            entries[(entry.org_id, entry.name)] = by_id[entry.id] = entry
        for grant in grant_rows:
            owner = by_id.get(grant["secret_id"])
            if owner is not None:
                owner.grants.append(
                    Grant(grant["id"], grant["subject"], grant["use"], grant["ttl_seconds"])
                )
        for entry in entries.values():
            if entry.backend in ("env", "file"):  # cheap: read now, so they are redacted now
                with contextlib.suppress(SecretUnavailable):  # logged; its use will say why
                    await self._read_external(entry, rebuild=False)
        self._entries = entries
        await self._rebuild()

    def _open(self, entry: Entry, row: Any) -> None:
        sealed = Sealed(row["key_id"], bytes(row["wrapped_key"]), bytes(row["ciphertext"]))
        try:
            entry.value = self.keyring.open(
                sealed, sealing_context(entry.org_id, entry.id)
            ).decode()
        except SecretCorrupt as exc:
            log.error("secret %r of %s does not open: %s", entry.name, entry.org_id, exc)
            entry.problem = SecretCorrupt(f"secret {entry.name!r} does not open: {exc.message}")

    async def _read_external(self, entry: Entry, *, rebuild: bool = True) -> str:
        backend = self.backends.get(entry.backend)
        if backend is None:
            raise SecretUnavailable(
                f"secret {entry.name!r} lives in the {entry.backend} backend, which is not"
                " configured on this server"
            )
        try:
            value = await backend.read(entry.ref or "")
        except SecretUnavailable as exc:
            log.warning("secret %r: %s", entry.name, exc.message)
            entry.problem = exc
            raise
        changed = entry.value != value
        entry.value, entry.problem = value, None
        if changed and rebuild:  # a value first read (Vault), or changed at its source
            await self._rebuild()
        return value

    async def _rebuild(self) -> None:
        """A new redactor of every value known (built off the event loop: 10,000 secrets take
        half a second)."""
        labels: dict[str, str] = dict.fromkeys(self._config_values, "config")
        for entry in self._entries.values():
            if entry.value is not None:
                labels[entry.value] = entry.name
        self.redactor = await asyncio.to_thread(redactor_of, labels)

    # --- master keys ------------------------------------------------------------------------

    async def verify_keys(self) -> None:
        """Refuse to start with a keyring that is not the store's: each held key must open the
        check value stored for its id (stored on first use), and every key a secret is sealed
        under must be held."""
        async with self._store.read() as conn:
            checks = {r["id"]: r for r in (await conn.execute(select(secret_keys))).mappings()}
            used = set((await conn.scalars(select(secrets.c.key_id).distinct())).all())
        for key_id, row in checks.items():
            if key_id in self.keyring.ids:
                self._verify(key_id, row)
        missing = sorted(k for k in used if k is not None and k not in self.keyring.ids)
        if missing:
            raise ConfigError(
                f"secrets in the store are sealed under master key(s) {', '.join(missing)},"
                " which the master key file does not hold: restore it (or add the old key"
                " below the new one while re-wrapping)"
            )
        for key_id in sorted(self.keyring.ids - set(checks)):
            sealed = self.keyring.seal_with(key_id, KEY_CHECK, f"key-check/{key_id}")
            try:
                async with self._store.write() as conn:
                    await conn.execute(
                        insert(secret_keys).values(
                            id=key_id,
                            check_wrapped=sealed.wrapped_key,
                            check_sealed=sealed.ciphertext,
                            created_at=self._clock.now(),
                        )
                    )
            except IntegrityError:  # another replica stored its check first: it must match
                async with self._store.read() as conn:
                    row = (
                        (await conn.execute(select(secret_keys).where(secret_keys.c.id == key_id)))
                        .mappings()
                        .one()
                    )
                self._verify(key_id, row)

    def _verify(self, key_id: str, row: Any) -> None:
        sealed = Sealed(key_id, bytes(row["check_wrapped"]), bytes(row["check_sealed"]))
        try:
            self.keyring.open(sealed, f"key-check/{key_id}")
        except SecretCorrupt:
            raise ConfigError(
                f"master key {key_id!r} is not the key this store's secrets were sealed with"
                " (another replica's or an old data directory's key?): use that key"
            ) from None

    # --- reading ----------------------------------------------------------------------------

    def entry(self, org_id: str, name: str) -> Entry | None:
        """A secret by organization and name (the book must be fresh)."""
        return self._entries.get((org_id, name))

    def entries(self, org_id: str) -> list[Entry]:
        """An organization's secrets, by name."""
        return sorted((e for e in self._entries.values() if e.org_id == org_id), key=_name)

    async def value(self, entry: Entry) -> str:
        """The secret's value (raises its problem: corrupt, or its backend cannot be read)."""
        if entry.backend == BUILTIN:
            if entry.value is None:
                raise entry.problem or SecretCorrupt(f"secret {entry.name!r} has no value")
            return entry.value
        return await self._read_external(entry)

    async def granted(self, entry: Entry, use: str, principal: Principal) -> Grant | None:
        """The first grant of ``use`` that admits ``principal``."""
        for grant in entry.grants_for(use):
            if await self._access.admits([grant.subject], principal):
                return grant
        return None

    async def inject(self, org_id: str, name: str, principal: Principal, purpose: str) -> str:
        """The value of secret ``name`` of ``org_id`` for Pilothouse to use on ``principal``'s
        behalf (``purpose`` names where, for the refusal's message)."""
        entry = await self.may_inject(org_id, name, principal, purpose)
        return await self.value(entry)

    async def may_inject(self, org_id: str, name: str, principal: Principal, purpose: str) -> Entry:
        """Refuse unless secret ``name`` exists and an inject grant admits ``principal``: for a
        value used on a connection shared between callers (an MCP upstream's), checked per
        call."""
        await self.fresh()
        entry = self._entries.get((org_id, name))
        if entry is None:
            raise SecretNotGranted(
                f"{purpose} uses secret {name!r}, which does not exist: create it with"
                f" `pilothouse secrets set {name}`"
            )
        if await self.granted(entry, "inject", principal) is None:
            raise SecretNotGranted(
                f"{purpose} uses secret {name!r}, which is not granted to this caller for"
                f" injection: `pilothouse secrets grant {name} <who> --use inject`"
            )
        return entry

    async def configured(self, org_id: str, name: str, purpose: str) -> str:
        """The value of secret ``name`` of ``org_id`` for a connection configuration opens for
        every caller (grants are checked per call, with ``may_inject``)."""
        await self.fresh()
        entry = self._entries.get((org_id, name))
        if entry is None:
            raise SecretNotGranted(f"{purpose} uses secret {name!r}, which does not exist")
        return await self.value(entry)

    def protects(self, ref: str) -> bool:
        """Whether a file reference reaches one of the server's own files (its master key
        file, its data directory)."""
        backend = self.backends.get("file")
        path = _real(backend.path(ref)) if isinstance(backend, FileBackend) else _real(Path(ref))
        return any(path == p or p in path.parents for p in self._protected)

    async def aclose(self) -> None:
        """Stop redacting log lines; close the backends' connections."""
        self.logs.uninstall()
        self._closed = True  # no re-read starts on a store about to close
        if self._reload is not None:
            # A re-read under way holds a connection: let it end (a cancelled database call
            # can leave a connection half made), within a bound.
            _, late = await asyncio.wait({self._reload}, timeout=RELOAD_TIMEOUT_S)
            for task in late:
                task.cancel()
        for backend in self.backends.values():
            await backend.aclose()


def _real(path: Path) -> Path:
    """``path`` made absolute with its links resolved (as far as it exists)."""
    return path.expanduser().resolve(strict=False)


def _name(entry: Entry) -> str:
    return entry.name


def redactor_of(labels: dict[str, str]) -> Redactor:
    """A redactor of ``{value: name}``. Values it cannot redact (too short, not text) are left
    out; a name that holds another secret's value is shown as ``secret`` instead, so that no
    value can make redaction, and so every call, fail."""
    usable = {v: n for v, n in labels.items() if len(v) >= MIN_SECRET_LENGTH and _text(v)}
    try:
        return Redactor(usable)
    except ValueError:
        plain = Redactor(dict.fromkeys(usable, "secret"))
        return Redactor({v: "secret" if plain.found(n) else n for v, n in usable.items()})


def _text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate (an environment's undecodable bytes)
        return False
    return True
