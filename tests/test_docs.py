"""Docs that cannot rot: generated sections match the code, and the README starts right."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pilothouse import reference
from pilothouse.policy.document import load
from pilothouse.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("relative", "section"), sorted(reference.SECTIONS))
def test_generated_doc_sections_match_the_code(relative: str, section: str) -> None:
    path = ROOT / relative
    assert path.read_text() == reference.rendered(path, section), (
        f"{relative} is stale: run `python -m pilothouse.reference`"
    )


def test_the_readme_starts_with_the_run_and_test_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash"
    assert lines[1].endswith("pilothouse serve")
    assert lines[2] == "bash .ci/run"
    assert lines[3] == "```"
    assert (ROOT / ".ci" / "run").read_text().count("pytest") >= 1


def _yaml_blocks(relative: str) -> list[str]:
    text = (ROOT / relative).read_text()
    # A block inside a list item is indented like the item: read it as written at its margin.
    return [textwrap.dedent(block.split("```", 1)[0]) for block in text.split("```yaml\n")[1:]]


def test_the_routing_example_in_the_configuration_docs_loads(tmp_path: Path) -> None:
    (block,) = [b for b in _yaml_blocks("docs/configuration.md") if "models:" in b]
    config = tmp_path / "pilothouse.yaml"
    config.write_text(block)
    keys = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "AZURE_OPENAI_KEY")
    loaded = load_settings(config, environ=dict.fromkeys(keys, "sk-example"))
    assert [m.alias for m in loaded.models] == ["claude-sonnet", "gpt-4o", "*"]
    assert loaded.models[0].deployments[1].provider == "openai-compatible"
    assert loaded.gateway.default_price is not None


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ("docs/secrets.md", "models:"),
        ("docs/mcp.md", "mcp_servers:"),
        ("docs/secrets.md", "vault:"),
        ("docs/dashboard.md", "oidc:"),
    ],
)
def test_the_configuration_examples_of_the_secrets_and_mcp_docs_load(
    tmp_path: Path, doc: str, key: str
) -> None:
    blocks = [b for b in _yaml_blocks(doc) if b.startswith(key)]
    config = tmp_path / "pilothouse.yaml"
    config.write_text(blocks[0])
    environ = {"VAULT_TOKEN": "hvs.example", "OIDC_CLIENT_SECRET": "client-secret"}
    loaded = load_settings(config, environ=environ)
    if key == "mcp_servers:":  # the priced tools' example
        (priced,) = blocks[1:]
        config.write_text(priced)
        (search,) = load_settings(config, environ={}).mcp_servers
        assert (search.price_of("web_search"), search.price_of("other")) == (5000, 0)
    else:
        assert len(blocks) == 1
    if key == "models:":
        assert loaded.models[0].deployments[0].secret_refs["api_key"].secret == "openai-key"
    elif key == "mcp_servers:":
        assert [s.name for s in loaded.mcp_servers] == ["time", "github", "tickets"]
        assert loaded.mcp_servers[1].secret_refs["env:GITHUB_PERSONAL_ACCESS_TOKEN"]
    elif key == "oidc:":
        assert loaded.oidc is not None and loaded.oidc.client_secret is not None
        assert loaded.oidc.client_secret.get_secret_value() == "client-secret"
        assert loaded.oidc.create_role is not None and loaded.oidc.create_role.value == "member"
    else:
        assert loaded.vault is not None and loaded.vault.token.get_secret_value() == "hvs.example"


@pytest.mark.parametrize("doc", ["docs/secrets.md", "docs/mcp.md"])
def test_the_policy_examples_of_the_secrets_and_mcp_docs_load(doc: str) -> None:
    blocks = [b for b in _yaml_blocks(doc) if b.startswith("rules:")]
    assert blocks
    for block in blocks:
        assert load(block).rules
