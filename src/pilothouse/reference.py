"""Reference sections of the docs generated from the code, so they cannot drift from it.

``python -m pilothouse.reference`` rewrites the marked sections of docs/configuration.md,
docs/api.md and docs/policy.md; a test fails when a committed section differs from what the code
renders.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from pilothouse.settings import Settings, env_name

SECTIONS = [
    ("docs/configuration.md", "settings"),
    ("docs/configuration.md", "models"),
    ("docs/api.md", "routes"),
    ("docs/policy.md", "packs"),
]


def render_settings() -> str:
    """A Markdown table of every setting: key, environment variable, default, meaning."""
    rows = [
        "| setting (YAML key) | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default: Any = field.default
        shown = "unset" if default is None else f"`{default}`"
        if field.default_factory is not None:
            shown = "built in"
        if isinstance(default, SecretStr):
            shown = "unset"
        rows.append(f"| `{name}` | `{env_name(name)}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


def render_routes() -> str:
    """A Markdown table of every HTTP route: method, path, summary, permission needed."""
    from pilothouse.app import build_app

    spec = build_app(Settings()).openapi()
    rows = ["| method | path | what it does |", "|---|---|---|"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            rows.append(f"| {method.upper()} | `{path}` | {operation.get('summary', '')} |")
    return "\n".join(rows)


def render_models() -> str:
    """A table per configuration object (the gateway's, MCP upstreams, Vault): each field, its
    default and meaning."""
    from pilothouse.gateway.config import (
        DeploymentConfig,
        GatewayConfig,
        ModelConfig,
        PriceOverride,
        Timeouts,
    )
    from pilothouse.mcp.config import McpServerConfig
    from pilothouse.secrets.backends import VaultConfig

    parts = []
    objects: list[tuple[str, type[BaseModel]]] = [
        ("`models[]`: an alias", ModelConfig),
        ("`models[].deployments[]`: an upstream", DeploymentConfig),
        ("`models[].deployments[].timeouts`", Timeouts),
        ("`models[].deployments[].price` and `gateway.default_price`", PriceOverride),
        ("`gateway`", GatewayConfig),
        ("`mcp_servers[]`: an upstream MCP server (see docs/mcp.md)", McpServerConfig),
        ("`vault`: HashiCorp Vault (see docs/secrets.md)", VaultConfig),
    ]
    for title, model in objects:
        parts += [f"**{title}**", "", "| field | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            default: Any = field.default
            if field.default_factory is not None:
                shown = "built in"
            elif default is PydanticUndefined:
                shown = "required"
            elif default is None:
                shown = "unset"
            else:
                shown = f"`{default}`"
            meaning = (field.description or "").replace("|", "\\|")
            parts.append(f"| `{name}` | {shown} | {meaning} |")
        parts.append("")
    return "\n".join(parts).rstrip()


def render_packs() -> str:
    """A table of every built-in rule: its id, pack, channels, decision and reason."""
    from pilothouse.policy.packs import BUILTIN

    rows = ["| rule | pack | channels | decision | reason |", "|---|---|---|---|---|"]
    for rule in BUILTIN:
        channels = ", ".join(sorted(c.value for c in rule.channels))
        reason = rule.reason.replace("|", "\\|")
        rows.append(
            f"| `{rule.id}` | `{rule.pack}` | {channels} | {rule.decision.value} | {reason} |"
        )
    return "\n".join(rows)


RENDERERS = {
    "settings": render_settings,
    "models": render_models,
    "routes": render_routes,
    "packs": render_packs,
}


def _replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", flags=re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"markers for section {name!r} not found")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def rendered(path: Path, name: str) -> str:
    """The file's text with section ``name`` freshly rendered."""
    return _replace(path.read_text(), name, RENDERERS[name]())


def main(root: Path) -> None:
    """Rewrite every generated section under ``root``."""
    for relative, name in SECTIONS:
        path = root / relative
        path.write_text(rendered(path, name))
        sys.stdout.write(f"updated {relative} ({name})\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
