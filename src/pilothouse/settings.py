"""Settings: the only module that reads the environment and configuration files.

Precedence, lowest first: built-in defaults, the YAML config file (``--config``), environment
variables (``PILOTHOUSE_*``), then explicit overrides from the command line.  Secrets in config
files are references (``{"$env": "NAME"}`` or ``{"$file": "path"}``), never values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from pilothouse.budgets.alerts import AlertWebhook
from pilothouse.budgets.limits import RateLimitConfig
from pilothouse.errors import ConfigError
from pilothouse.gateway.config import GatewayConfig, ModelConfig, demo_models
from pilothouse.mcp.config import McpServerConfig
from pilothouse.secrets.backends import VaultConfig
from pilothouse.web.config import OidcConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7450
DEFAULT_DATA_DIR = Path(".pilothouse")
ENV_PREFIX = "PILOTHOUSE_"


class Settings(BaseModel):
    """Server settings, validated once at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(DEFAULT_HOST, description="Address the server binds.")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="TCP port the server binds.")
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Directory for the embedded SQLite store.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store; empty means SQLite in data_dir. "
        "postgresql:// URLs use the asyncpg driver.",
    )
    admin_key: SecretStr | None = Field(
        None, description="Owner key to install on first start instead of generating one."
    )
    admin_password: SecretStr | None = Field(
        None,
        min_length=12,
        description="Dashboard password of the first owner (owner@localhost), set on first"
        " start; later, `pilothouse users set-password`. At least 12 characters.",
    )
    oidc: OidcConfig | None = Field(
        None,
        description="Single sign-on to the dashboard with an OpenID Connect issuer (YAML:"
        " issuer, client_id, client_secret, scopes, organization, create_role, label).",
    )
    web_session_hours: float = Field(
        12.0,
        gt=0,
        le=24 * 30,
        description="How long a dashboard sign-in lasts before the person signs in again.",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    key_cache_ttl_seconds: float = Field(
        60.0, gt=0, description="How long a verified key stays cached without a re-read."
    )
    last_used_flush_seconds: float = Field(
        15.0, gt=0, description="How often key last-used times are written to the store."
    )
    usage_rollup_seconds: float = Field(
        30.0,
        gt=0,
        description="How often usage rows are summed into the daily roll-ups that spend reports"
        " read (reports are exact either way; rows not yet summed are read one by one).",
    )
    invalidation_reconnect_seconds: float = Field(
        0.5,
        gt=0,
        le=5.0,
        description="PostgreSQL: how soon a replica listens again for cache invalidations after"
        " losing its connection (its caches are bypassed meanwhile).",
    )
    keep_alive_seconds: int = Field(
        75,
        ge=1,
        description="How long an idle client connection stays open. Longer than clients' own"
        " idle expiry (5 s in httpx and so the OpenAI and Anthropic SDKs) so that a client never"
        " sends on a connection the server is closing, and than a load balancer's (often 60 s).",
    )
    access_log: bool = Field(
        False,
        description="Log every HTTP request (uvicorn's access log; costs about a quarter of"
        " throughput, see bench/README.md).",
    )
    models: list[ModelConfig] = Field(
        default_factory=demo_models,
        description="LLM model aliases and their deployments (YAML list); by default the demo"
        " provider serves `demo`, `claude-*` and `gpt-*`.",
    )
    rate_limits: list[RateLimitConfig] = Field(
        default_factory=list,
        description="Requests and tokens per minute and concurrent calls per scope (YAML list"
        " of {scope, rpm, tpm, concurrent}); counted in the store, so they hold across"
        " replicas. `user:*` gives each user the limit.",
    )
    alert_webhooks: list[AlertWebhook] = Field(
        default_factory=list,
        description="Where budget threshold alerts are posted (YAML list of {url, format:"
        " json|slack, headers}); alerts are recorded even with none.",
    )
    alert_check_seconds: float = Field(
        5.0, gt=0, description="How often budgets are checked for thresholds crossed."
    )
    policy_file: Path | None = Field(
        None,
        description="A policy document (YAML) that is the root organization's policy (GitOps):"
        " stored as a new version when it changes, re-read every policy_file_poll_seconds;"
        " while set, the API refuses changes to that policy. An invalid file is logged and the"
        " active policy kept.",
    )
    policy_file_poll_seconds: float = Field(
        5.0, gt=0, description="How often the policy file is re-read."
    )
    approval_webhooks: list[AlertWebhook] = Field(
        default_factory=list,
        description="Where a new approval is announced, with a link to it, and an MCP tool"
        " withheld because its definition changed (YAML list of {url, format: json|slack,"
        " headers}).",
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="The URL people reach this server at: links in approval notifications.",
    )
    master_key_file: Path | None = Field(
        None,
        description="The master key file that wraps every secret's data key: lines of"
        " <id>:<base64 of 32 bytes>, newest first, readable by its owner only. Unset means"
        " master.key in data_dir, made on first start. Give every replica the same file.",
    )
    master_key: SecretStr | None = Field(
        None,
        description="The master key(s) themselves, in the file's format (lines or comma"
        " separated), for a platform that hands secrets over in the environment"
        " (PILOTHOUSE_MASTER_KEY); wins over master_key_file.",
    )
    vault: VaultConfig | None = Field(
        None,
        description="HashiCorp Vault for secrets whose backend is vault (a mapping of url,"
        ' token ({"$env": "VAULT_TOKEN"}), mount_point, kv_version, namespace, ...); see'
        " docs/secrets.md.",
    )
    mcp_servers: list[McpServerConfig] = Field(
        default_factory=list,
        description="The upstream MCP servers /mcp aggregates (YAML list of {name, transport:"
        " stdio|http|sse, command, args, env, url, headers, timeout_seconds, ...}); env and"
        ' header values may be {"$secret": name}. Empty: /mcp answers 404.',
    )
    mcp_list_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long each MCP upstream's tool list is reused before it is asked again"
        " (a changed definition is noticed, and withheld, within this time).",
    )
    mcp_pin_first_use: bool = Field(
        True,
        description="Pin an MCP tool's definition as approved when it is first seen (trust on"
        " first use); false: every new tool waits for a person's approval. A pinned tool whose"
        " definition changes is withheld until it is approved either way.",
    )
    hook_wait_seconds: float = Field(
        300.0,
        ge=0,
        le=3600,
        description="How long an agent's hook waits for a human to decide an ask before it"
        " denies (the hook endpoint's wait when the request gives none).",
    )
    gateway: GatewayConfig = Field(
        default_factory=GatewayConfig,
        description="Retries, circuit breaking and the default price (see docs/configuration.md).",
    )
    root_org_name: str = Field("default", description="Name of the organization made at bootstrap.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    otel_exporter: Literal["none", "otlp", "console"] = Field(
        "none",
        description="Where each LLM call's OpenTelemetry span goes: none (no spans are made),"
        " otlp (OTLP/HTTP to otel_endpoint) or console (stdout, for debugging).",
    )
    otel_endpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        description="otlp: the collector's OTLP/HTTP URL; a URL without a path gets /v1/traces."
        " Unset means http://localhost:4318/v1/traces. OTEL_EXPORTER_OTLP_ENDPOINT is not read.",
    )
    otel_service_name: str = Field(
        "pilothouse", min_length=1, description="The service.name resource attribute of spans."
    )
    metrics_enabled: bool = Field(
        True, description="Serve Prometheus metrics at GET /metrics (404 when false)."
    )

    def resolved_master_key_file(self) -> Path:
        """The master key file: the one named, or master.key in the data directory."""
        return self.master_key_file or self.data_dir / "master.key"

    def resolved_database_url(self) -> str:
        """The store URL with the async driver named."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{self.data_dir / 'pilothouse.db'}"
        return normalise_database_url(self.database_url)


def normalise_database_url(url: str) -> str:
    """Name the async driver for a plain ``postgresql://`` or ``sqlite://`` URL."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def resolve_secret_ref(value: Any, *, base_dir: Path, environ: Mapping[str, str]) -> Any:
    """Turn ``{"$env": NAME}`` / ``{"$file": path}`` into the value they point at, at any depth
    (a deployment's ``api_key`` inside ``models`` is a reference like any top-level one)."""
    if isinstance(value, list):
        return [resolve_secret_ref(v, base_dir=base_dir, environ=environ) for v in value]
    if isinstance(value, Mapping) and not (len(value) == 1 and next(iter(value)) in _REF_KINDS):
        return {
            k: resolve_secret_ref(v, base_dir=base_dir, environ=environ) for k, v in value.items()
        }
    if isinstance(value, Mapping):
        ((kind, ref),) = value.items()
        if kind == "$env":
            if ref not in environ:
                raise ConfigError(f"config refers to environment variable {ref!r}, which is unset")
            return environ[ref]
        if kind == "$file":
            path = (base_dir / str(ref)).expanduser()
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"config refers to file {str(path)!r}: {exc.strerror}") from exc
    return value


_REF_KINDS = ("$env", "$file")


def read_config_file(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """Read a YAML config file into a mapping of settings."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings")
    return {k: resolve_secret_ref(v, base_dir=path.parent, environ=environ) for k, v in raw.items()}


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given by ``PILOTHOUSE_*`` environment variables (structured ones, such as
    ``PILOTHOUSE_MODELS``, as JSON)."""
    values: dict[str, Any] = {}
    for field in Settings.model_fields:
        raw = environ.get(env_name(field))
        if not raw:
            continue
        if field in _STRUCTURED:
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{env_name(field)} is not valid JSON: {exc.msg}") from exc
            values[field] = resolve_secret_ref(parsed, base_dir=Path.cwd(), environ=environ)
        else:
            values[field] = raw
    return values


_STRUCTURED = ("models", "gateway", "vault", "mcp_servers")


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from defaults, the config file, the environment and overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_file, env))
    values.update(read_env(env))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


def inherited_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child it starts (``pilothouse run``)."""
    return dict(os.environ)


class ClientSettings(BaseModel):
    """Where the CLI finds a running server and which key it presents."""

    url: str = "http://127.0.0.1:7450"
    api_key: SecretStr | None = None


def load_client_settings(url: str | None, key: str | None) -> ClientSettings:
    """CLI connection settings: flags win over ``PILOTHOUSE_URL`` / ``PILOTHOUSE_API_KEY``."""
    env_url = os.environ.get("PILOTHOUSE_URL")
    env_key = os.environ.get("PILOTHOUSE_API_KEY")
    chosen_key = key or env_key
    return ClientSettings(
        url=(url or env_url or ClientSettings().url).rstrip("/"),
        api_key=SecretStr(chosen_key) if chosen_key else None,
    )
