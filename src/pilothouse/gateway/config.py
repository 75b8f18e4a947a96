"""Gateway configuration: model aliases and the deployments that serve them.

Plain pydantic models (and secret references, themselves plain) with no other Pilothouse
imports, so ``settings`` can hold them.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from pilothouse.secrets.refs import SecretRef

ProviderName = Literal["demo", "openai", "anthropic", "openai-compatible"]
SELECTOR_KINDS = ("org", "team", "project", "repo", "key", "user", "label", "session")


def check_selector(selector: str) -> None:
    """Raise ValueError naming the problem unless ``selector`` is ``<kind>:<value>``."""
    kind, sep, rest = selector.partition(":")
    if not sep or kind not in SELECTOR_KINDS or not rest:
        raise ValueError(
            f"{selector!r} is not a selector: use <kind>:<value> with kind one of"
            f" {', '.join(SELECTOR_KINDS)}"
        )
    if kind == "label" and "=" not in rest:
        raise ValueError(f"{selector!r}: a label selector is label:<name>=<value>")


class PriceOverride(BaseModel):
    """A deployment's own prices, in micro-dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: int = Field(ge=0, description="Uncached input, micro-dollars per million tokens.")
    output: int = Field(ge=0, description="Output (reasoning included), same unit.")
    cache_read: int | None = Field(None, ge=0, description="Cache reads; unset means input.")
    cache_write: int | None = Field(None, ge=0, description="Cache writes; unset means input.")


class Timeouts(BaseModel):
    """How long to wait for an upstream, in seconds."""

    model_config = ConfigDict(extra="forbid")

    connect: float = Field(5.0, gt=0, description="To open the TCP (and TLS) connection.")
    first_byte: float = Field(
        120.0, gt=0, description="From sending the request to the response headers."
    )
    idle: float = Field(120.0, gt=0, description="Between two reads of the response body.")


class DeploymentConfig(BaseModel):
    """One upstream that can serve an alias."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, description="Names the deployment in usage rows and metrics; provider/model if unset."
    )
    provider: ProviderName = Field(
        description="demo, openai, anthropic, or openai-compatible (vLLM, Ollama, OpenRouter,"
        " LiteLLM, Azure-style servers)."
    )
    model: str = Field(description="The model name the upstream knows.")
    base_url: str | None = Field(
        None,
        description="openai and openai-compatible: up to and including /v1 (the OpenAI SDK's"
        " base_url); anthropic: the host, without /v1 (the Anthropic SDK's base_url).",
    )
    api_key: SecretStr | SecretRef | None = Field(
        None,
        description='The provider key: {"$secret": "openai-key"} (a secret Pilothouse holds,'
        ' injected where a grant allows it), or {"$env": "OPENAI_API_KEY"} / {"$file": path};'
        " never returned.",
    )
    api_version: str | None = Field(
        None,
        description="Azure-style servers: sent as the api-version query parameter, and the key"
        " goes in an api-key header instead of Authorization.",
    )
    headers: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description='Extra headers sent upstream on every call; a value may be {"$secret": name}.',
    )
    responses_api: bool = Field(
        False,
        description="openai-compatible only: the server also speaks /responses natively.",
    )
    weight: int = Field(1, ge=0, description="Share of calls with the weighted strategy.")
    priority: int = Field(0, description="Lower is tried first with the priority strategy.")
    price: PriceOverride | None = Field(
        None, description="This deployment's prices, over the shipped price file."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Connect, first byte, idle.")
    latency_ms: int = Field(
        0, ge=0, le=600_000, description="demo only: time before the first byte of a reply."
    )

    @model_validator(mode="after")
    def _needs_a_url(self) -> DeploymentConfig:
        if self.provider == "openai-compatible" and not self.base_url:
            raise ValueError("an openai-compatible deployment needs a base_url")
        return self

    @property
    def id(self) -> str:
        """The name usage rows record."""
        return self.name or f"{self.provider}/{self.model}"

    @property
    def secret_refs(self) -> dict[str, SecretRef]:
        """The secrets this deployment uses: ``api_key``, and ``header:<name>`` per header."""
        refs = {
            f"header:{k.lower()}": v for k, v in self.headers.items() if isinstance(v, SecretRef)
        }
        if isinstance(self.api_key, SecretRef):
            refs["api_key"] = self.api_key
        return refs


class ModelConfig(BaseModel):
    """An alias (exact, or a glob such as ``claude-*``) and its deployments."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(description="The model name clients send; a glob such as claude-* too.")
    deployments: list[DeploymentConfig] = Field(
        min_length=1, description="The upstreams that can serve it."
    )
    strategy: Literal["priority", "weighted", "lowest-cost", "lowest-latency"] = Field(
        "priority",
        description="The order deployments are tried in: priority, weighted (by weight),"
        " lowest-cost (input + output price), lowest-latency (moving average of time to first"
        " byte).",
    )
    retries: int = Field(
        2, ge=0, le=10, description="Attempts after the first, across this alias's deployments."
    )
    allowed: list[str] | None = Field(
        None,
        description="Who may use this alias; any one match admits: team:<id or name>,"
        " project:<name>, repo:<owner/name>, key:<key id or prefix>, user:<id>, org:<id>,"
        " label:<name>=<value>, session:<id>. Unset means everyone; an empty list means no one.",
    )

    @field_validator("allowed")
    @classmethod
    def _selectors(cls, value: list[str] | None) -> list[str] | None:
        for selector in value or []:
            check_selector(selector)
        return value

    def matches(self, requested: str) -> bool:
        """Whether a requested model name is served by this alias."""
        if any(c in self.alias for c in "*?["):
            return fnmatch.fnmatchcase(requested, self.alias)
        return requested == self.alias


class GatewayConfig(BaseModel):
    """Gateway-wide behaviour: retries, circuit breaking, and the price of unpriced models."""

    model_config = ConfigDict(extra="forbid")

    backoff_base_seconds: float = Field(
        0.25, ge=0, description="First retry waits this long; each next one twice as long."
    )
    backoff_max_seconds: float = Field(4.0, ge=0, description="Longest wait between retries.")
    max_retry_after_seconds: float = Field(
        10.0,
        ge=0,
        description="An upstream's Retry-After up to this long is waited out; a longer one"
        " cools the deployment down and the call moves on to the next deployment.",
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that cool a deployment down."
    )
    breaker_cooldown_seconds: float = Field(
        30.0, gt=0, description="How long a cooling-down deployment is skipped."
    )
    latency_smoothing: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Weight of the newest sample in the lowest-latency moving average.",
    )
    reserve_output_tokens: int = Field(
        4096,
        ge=1,
        description="Output tokens a budget reservation assumes for a call that names no"
        " max_tokens (max_completion_tokens, max_output_tokens); the reservation settles to"
        " the actual cost when the call ends.",
    )
    reserve_every_call: bool = Field(
        True,
        description="Reserve every call's worst-case cost durably before forwarding it, with"
        " or without a budget or rate limit: a process that dies mid-call leaves a reservation"
        " that the sweeper settles at that cost, marked estimated, so no call's spend escapes"
        " the usage table. Off: a call no budget or rate limit applies to is recorded only"
        " when it ends (one write fewer before forwarding), and a process killed mid-call"
        " loses its usage.",
    )
    reservation_ttl_seconds: float = Field(
        120.0,
        gt=0,
        description="A budget reservation's time to live. The process serving the call renews"
        " it every third of this; one not renewed for this long belongs to a process that"
        " stopped, and the sweeper settles it at its reserved cost, marked estimated.",
    )
    sweep_seconds: float = Field(
        30.0, gt=0, description="How often expired budget reservations are looked for."
    )
    default_price: PriceOverride | None = Field(
        None,
        description="Price for a model found neither in the price file nor in an override;"
        " unset means such calls are refused (never silently free).",
    )


def demo_models() -> list[ModelConfig]:
    """The default catalogue: the demo provider behind names real clients send."""
    demo = DeploymentConfig(provider="demo", model="demo-1")
    return [
        ModelConfig(alias="demo", deployments=[demo]),
        ModelConfig(alias="claude-*", deployments=[demo]),
        ModelConfig(alias="gpt-*", deployments=[demo]),
    ]
