"""Which models a key may use is configuration, enforced: 403 in the client's own error shape,
audited, no usage row; ``GET /v1/models`` lists only what the caller may use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from sqlalchemy import select

from pilothouse.audit.tables import audit_events
from pilothouse.gateway.access import ModelAccess
from pilothouse.gateway.config import DeploymentConfig, ModelConfig
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.conftest import Api
from tests.gateway.conftest import anthropic_client, openai_client, usage_rows

DEMO = DeploymentConfig(provider="demo", model="demo-1")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=[
            ModelConfig(alias="open", deployments=[DEMO]),
            ModelConfig(alias="payments-only", deployments=[DEMO], allowed=["team:payments"]),
            ModelConfig(alias="checkout-only", deployments=[DEMO], allowed=["project:checkout"]),
            ModelConfig(alias="labelled", deployments=[DEMO], allowed=["label:tier=gold"]),
            ModelConfig(alias="nobody", deployments=[DEMO], allowed=[]),
        ],
    )


async def _denials(services: Services) -> list[dict[str, Any]]:
    async with services.store.read() as conn:
        rows = await conn.execute(
            select(audit_events).where(audit_events.c.action == "access.denied")
        )
        return [dict(r) for r in rows.mappings()]


async def test_team_project_and_label_selectors_admit_and_refuse(
    api: Api, gateway_http: httpx.AsyncClient, services: Services
) -> None:
    payments = await api.ok("POST", "/api/v1/teams", json={"name": "payments"})
    infra = await api.ok("POST", "/api/v1/teams", json={"name": "infra"})
    ours = await api.session(team_id=payments["id"], project="checkout", labels={"tier": "gold"})
    theirs = await api.session(team_id=infra["id"], project="search")
    mine = openai_client(gateway_http, ours["key"]["token"])
    other = openai_client(gateway_http, theirs["key"]["token"])
    messages: Any = [{"role": "user", "content": "hi"}]

    for model in ("open", "payments-only", "checkout-only", "labelled"):
        await mine.chat.completions.create(model=model, messages=messages)
    await other.chat.completions.create(model="open", messages=messages)
    for model in ("payments-only", "checkout-only", "labelled", "nobody"):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await other.chat.completions.create(model=model, messages=messages)
        assert refused.value.code == "model_not_allowed"
        assert model in refused.value.message

    rows = await usage_rows(services)
    assert len(rows) == 5  # the refused calls made no rows
    denials = await _denials(services)
    assert sorted(d["target_id"] for d in denials) == sorted(
        ["payments-only", "checkout-only", "labelled", "nobody"]
    )
    assert {d["actor_id"] for d in denials} == {theirs["session"]["id"]}


async def test_refusal_is_in_the_anthropic_shape_for_anthropic_clients(
    api: Api, gateway_http2: httpx2.AsyncClient
) -> None:
    session = await api.session(project="search")
    client = anthropic_client(gateway_http2, session["key"]["token"])
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        await client.messages.create(
            model="checkout-only", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.body == {
        "type": "error",
        "error": {
            "type": "permission_error",
            "message": "model 'checkout-only' is not allowed for this key",
            "code": "model_not_allowed",
        },
    }


async def test_models_lists_only_what_the_caller_may_use(
    api: Api, gateway_http: httpx.AsyncClient
) -> None:
    payments = await api.ok("POST", "/api/v1/teams", json={"name": "payments"})
    ours = await api.session(team_id=payments["id"], project="search")
    listed = await openai_client(gateway_http, ours["key"]["token"]).models.list()
    assert sorted(m.id for m in listed.data) == ["open", "payments-only"]


async def test_key_selector_by_id_or_prefix(api: Api, services: Services) -> None:
    session = await api.session(project="search")
    access = ModelAccess(services.store, 60)
    principal = await services.authenticator.authenticate(
        {"authorization": f"Bearer {session['key']['token']}"}
    )
    by_prefix = ModelConfig(
        alias="k", deployments=[DEMO], allowed=[f"key:{session['key']['prefix']}"]
    )
    by_id = ModelConfig(alias="k", deployments=[DEMO], allowed=[f"key:{session['key']['id']}"])
    other = ModelConfig(alias="k", deployments=[DEMO], allowed=["key:phk_nothing"])
    assert await access.allows(by_prefix, principal)
    assert await access.allows(by_id, principal)
    assert not await access.allows(other, principal)


def test_bad_selectors_are_refused_at_load() -> None:
    for bad in ("team", "teams:x", "label:tier", "project:"):
        with pytest.raises(ValueError, match="selector"):
            ModelConfig(alias="m", deployments=[DEMO], allowed=[bad])
