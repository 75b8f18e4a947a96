"""External secret backends: a secret's value read from the environment, a file or Vault.

A secret is either sealed in the store (``pilothouse.secrets.crypto``) or points at an external
source, a ``SecretBackend``, with a reference whose syntax the backend owns::

    env     NAME            an environment variable of the server's process
    file    path            a file; a relative path from the server's working directory
    vault   path#field      a field of a HashiCorp Vault KV secret under the configured mount

A value that cannot be read is a ``SecretUnavailable`` (503) that names the reference and the
reason, never the value. A malformed reference is a ``ValueError`` from ``check_ref`` that does
not echo it either, because a malformed reference is often a value pasted in the wrong field.

``settings`` imports ``VaultConfig`` from here, so this module imports only pydantic at import
time: ``hvac`` (and ``requests`` with it) is imported when a ``VaultBackend`` is built.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pilothouse.errors import PilothouseError


class SecretUnavailable(PilothouseError):
    """An external secret cannot be read right now; the message names the reference and why."""

    status = 503
    code = "secret_unavailable"


class SecretBackend(Protocol):
    """Where external secret values come from; built-in and plug-in backends alike."""

    kind: str

    async def read(self, ref: str) -> str:
        """The value ``ref`` points at, or ``SecretUnavailable``."""
        ...

    def check_ref(self, ref: str) -> None:
        """Raise ``ValueError`` saying what is wrong if ``ref`` is not a well-formed reference."""
        ...

    async def aclose(self) -> None:
        """Release connections and cached values."""
        ...


def _checked(backend: SecretBackend, ref: str) -> None:
    """``check_ref`` for ``read``: a malformed reference stored anyway is unavailable, not a 500."""
    try:
        backend.check_ref(ref)
    except ValueError as exc:
        raise SecretUnavailable(f"the {backend.kind} secret reference is malformed: {exc}") from exc


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvBackend:
    """Environment variables of the server's process (given as a mapping by settings)."""

    kind = "env"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def check_ref(self, ref: str) -> None:
        """An environment variable name: letters, digits and ``_``, not starting with a digit."""
        if not _ENV_NAME.fullmatch(ref):
            raise ValueError(
                "an env reference is an environment variable name: letters, digits and _,"
                " not starting with a digit (e.g. GITHUB_TOKEN)"
            )

    async def read(self, ref: str) -> str:
        """The variable's value; unset or empty is unavailable."""
        _checked(self, ref)
        value = self._environ.get(ref)
        if not value:
            state = "unset" if value is None else "empty"
            raise SecretUnavailable(
                f"environment variable {ref} is {state} in the Pilothouse server's environment:"
                " set it where the server is started"
            )
        return value

    async def aclose(self) -> None:
        """Nothing to release."""


class FileBackend:
    """Files (a mounted Kubernetes or Docker secret, say); relative paths from ``base_dir``."""

    kind = "file"

    def __init__(self, base_dir: Path) -> None:
        self._base_dir = base_dir

    def check_ref(self, ref: str) -> None:
        """A non-empty path without NUL characters."""
        if not ref.strip():
            raise ValueError("a file reference is a path to the file that holds the value")
        if "\0" in ref:
            raise ValueError("a file reference may not contain a NUL character")

    def path(self, ref: str) -> Path:
        """The file ``ref`` names: absolute as given, relative against ``base_dir``."""
        path = Path(ref)
        return path if path.is_absolute() else self._base_dir / path

    async def read(self, ref: str) -> str:
        """The file's text without surrounding whitespace; missing, unreadable or empty is
        unavailable."""
        _checked(self, ref)
        path = self.path(ref)
        # A secrets mount may be a network filesystem: never block the event loop on it.
        return await asyncio.to_thread(_read_secret_file, path)

    async def aclose(self) -> None:
        """Nothing to release."""


def _read_secret_file(path: Path) -> str:
    """The stripped UTF-8 text of ``path``, or ``SecretUnavailable`` naming the OS reason."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretUnavailable(f"cannot read secret file {path}: {reason}") from exc
    except UnicodeDecodeError:
        # Not chained: the decode error quotes the offending bytes, which are the secret's.
        raise SecretUnavailable(f"secret file {path} is not UTF-8 text") from None
    if not value:
        raise SecretUnavailable(f"secret file {path} is empty")
    return value


class VaultConfig(BaseModel):
    """Where Pilothouse reads Vault secrets (``vault:`` in the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        pattern=r"^https?://",
        description="Vault's address, e.g. https://vault.internal:8200.",
    )
    token: SecretStr = Field(
        min_length=1,
        description='A Vault token that may read the secrets; give it as {"$env": "VAULT_TOKEN"}'
        ' or {"$file": "path"}, never inline.',
    )
    mount_point: str = Field(
        "secret",
        pattern=r"^[^/\s#?]+(/[^/\s#?]+)*$",
        description="Where the KV secrets engine is mounted, without leading or trailing slash.",
    )
    kv_version: Literal[1, 2] = Field(
        2, description="Version of the KV secrets engine at mount_point (1 or 2)."
    )
    namespace: str | None = Field(
        None,
        description="Vault Enterprise or HCP Vault namespace, sent as X-Vault-Namespace.",
    )
    timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long to wait for Vault to connect and to answer before a secret is"
        " unavailable.",
    )
    verify_tls: bool = Field(True, description="Verify Vault's TLS certificate.")
    cache_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a secret read from Vault is reused before it is read again;"
        " 0 reads Vault on every use.",
    )


_VAULT_REF = re.compile(r"(?P<path>[^/#?\s]+(?:/[^/#?\s]+)*)#(?P<field>[^#\s]+)")


def _split_vault_ref(ref: str) -> tuple[str, str]:
    """``path#field`` as ``(path, field)``; ``ValueError`` if malformed."""
    match = _VAULT_REF.fullmatch(ref)
    if match is None:
        raise ValueError(
            "a vault reference is <path>#<field>, a secret's path under the mount and one of its"
            " fields, e.g. ci/github#token (no spaces, no leading or trailing /)"
        )
    path = match["path"]
    if any(segment in {".", ".."} for segment in path.split("/")):
        # The path is put into the URL as is: ".." would climb out of the mount.
        raise ValueError("a vault reference's path may not contain . or .. segments")
    return path, match["field"]


class VaultBackend:
    """Fields of HashiCorp Vault KV secrets (v1 or v2), read with hvac and briefly cached."""

    kind = "vault"

    def __init__(
        self, config: VaultConfig, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        import hvac  # here, not at the top: see the module docstring

        self._config = config
        self._now = monotonic
        self._client: Any = hvac.Client(
            url=config.url,
            token=config.token.get_secret_value(),
            namespace=config.namespace,
            timeout=config.timeout_seconds,
            verify=config.verify_tls,
        )
        # Whole secrets by path (expiry, fields): two fields of one secret cost one read.
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def check_ref(self, ref: str) -> None:
        """``<path>#<field>``, e.g. ``ci/github#token``."""
        _split_vault_ref(ref)

    async def read(self, ref: str) -> str:
        """The field's value, from the cache when read less than ``cache_seconds`` ago."""
        _checked(self, ref)
        path, field = _split_vault_ref(ref)
        data = self._cached(path)
        if data is None:
            data = await asyncio.to_thread(self._fetch, path)
            if self._config.cache_seconds > 0:
                self._cache[path] = (self._now() + self._config.cache_seconds, data)
        return self._field(data, path, field)

    def invalidate(self, ref: str | None = None) -> None:
        """Forget the cached secret ``ref`` (``path#field`` or ``path``) is in, or every one."""
        if ref is None:
            self._cache.clear()
        else:
            self._cache.pop(ref.partition("#")[0], None)

    async def aclose(self) -> None:
        """Close the HTTP session and forget cached values."""
        self._cache.clear()
        self._client.adapter.close()

    def _where(self, path: str) -> str:
        return f"{self._config.mount_point}/{path}"

    def _cached(self, path: str) -> dict[str, Any] | None:
        entry = self._cache.get(path)
        if entry is None:
            return None
        expires, data = entry
        if expires <= self._now():
            del self._cache[path]
            return None
        return data

    def _field(self, data: dict[str, Any], path: str, field: str) -> str:
        where = self._where(path)
        if field not in data:
            # Field names are not values: listing them points at the typo.
            have = ", ".join(sorted(map(str, data))[:20]) or "none"
            raise SecretUnavailable(
                f"the Vault secret at {where} has no field {field!r} (its fields: {have})"
            )
        value = data[field]
        if not isinstance(value, str):
            raise SecretUnavailable(
                f"field {field!r} of the Vault secret at {where} holds a JSON {_json_kind(value)},"
                " not a string: store the value as a string"
            )
        if not value:
            raise SecretUnavailable(f"field {field!r} of the Vault secret at {where} is empty")
        return value

    def _fetch(self, path: str) -> dict[str, Any]:
        """The secret's fields, read in a worker thread (hvac blocks)."""
        import hvac.exceptions
        import requests

        where, url = self._where(path), self._config.url
        try:
            answer = self._read_secret(path)
        except hvac.exceptions.InvalidPath as exc:
            raise SecretUnavailable(
                f"Vault has no such secret at {where} (or its latest version is deleted):"
                " check the reference's path and the vault mount_point and kv_version settings"
            ) from exc
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise SecretUnavailable(
                f"the Vault token may not read {where} (permission denied): grant its policy"
                f" read on {self._api_path(path)}, or check that the token is valid"
            ) from exc
        except hvac.exceptions.VaultError as exc:
            said = ", ".join(exc.errors or [])[:200] or "no reason given"
            raise SecretUnavailable(
                f"Vault at {url} refused to read {where}: {type(exc).__name__} ({said})"
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise SecretUnavailable(
                f"Vault at {url} cannot be reached: no answer within"
                f" {self._config.timeout_seconds:g} s (timeout_seconds)"
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise SecretUnavailable(
                f"Vault at {url} cannot be reached: TLS failed ({_network_reason(exc)}); a"
                " certificate from a private CA needs that CA trusted (REQUESTS_CA_BUNDLE)"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise SecretUnavailable(
                f"Vault at {url} cannot be reached: {_network_reason(exc)}"
            ) from exc
        return self._secret_data(answer, where)

    def _read_secret(self, path: str) -> Any:
        kv, mount = self._client.secrets.kv, self._config.mount_point
        if self._config.kv_version == 1:
            return kv.v1.read_secret(path=path, mount_point=mount)
        # Explicit: left unset, hvac warns that its default changes in hvac 3.
        return kv.v2.read_secret(path=path, mount_point=mount, raise_on_deleted_version=True)

    def _api_path(self, path: str) -> str:
        mount = self._config.mount_point
        return f"{mount}/data/{path}" if self._config.kv_version == 2 else f"{mount}/{path}"

    def _secret_data(self, answer: Any, where: str) -> dict[str, Any]:
        """The fields in Vault's answer: ``data`` (v1) or ``data.data`` (v2)."""
        data = answer.get("data") if isinstance(answer, dict) else None
        if self._config.kv_version == 2 and isinstance(data, dict):
            data = data.get("data")
        if not isinstance(data, dict):
            # A 200 that is not KV JSON: a proxy's page, or a mount of another engine or version.
            raise SecretUnavailable(
                f"Vault at {self._config.url} answered for {where} with something other than a"
                f" KV version {self._config.kv_version} secret: check url and kv_version"
            )
        return data


def _json_kind(value: object) -> str:
    """What JSON calls the type of ``value`` (how Vault's users know it)."""
    kinds = ((bool, "boolean"), ((int, float), "number"), (dict, "object"), (list, "array"))
    return next((name for types, name in kinds if isinstance(value, types)), "null")


_NETWORK_REASON = re.compile(r"\[(?:Errno -?\d+|SSL: \w+)\] ([^'\"()\[\]]+)")


def _network_reason(exc: Exception) -> str:
    """The OS's or OpenSSL's words for a failed connection ("Connection refused"), not
    urllib3's nesting."""
    match = _NETWORK_REASON.search(str(exc))
    return match[1].strip() if match else type(exc).__name__


def external_backends(
    *, environ: Mapping[str, str], base_dir: Path, vault: VaultConfig | None
) -> dict[str, SecretBackend]:
    """The external backends by kind: env and file always, vault when configured."""
    backends: dict[str, SecretBackend] = {
        "env": EnvBackend(environ),
        "file": FileBackend(base_dir),
    }
    if vault is not None:
        backends["vault"] = VaultBackend(vault)
    return backends
