"""A new approval is announced to webhooks (Pilothouse's JSON and Slack's), with a link; a policy
file is the policy (GitOps): stored when it changes, kept when it is invalid, and the API
refuses to change it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from pilothouse.app import build_app
from pilothouse.budgets.alerts import AlertWebhook
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from tests.budgets.test_alerts import Hook, hook  # noqa: F401  (the fixture)
from tests.conftest import Api, MutableClock

CLOUD = "kubectl delete namespace staging"
FILE_POLICY = """\
rules:
  - id: no-make
    channel: shell
    match: {program: make}
    decision: deny
    reason: builds run in CI
"""


@pytest.fixture
def settings(database_url: str, tmp_path: Path, hook: Hook) -> Settings:  # noqa: F811
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        approval_webhooks=[
            AlertWebhook(url=f"{hook.url}/generic", headers={"authorization": "Bearer hook"}),
            AlertWebhook(url=f"{hook.url}/slack", format="slack"),
        ],
        public_url="https://pilothouse.example.com",
    )


async def test_a_new_approval_is_posted_to_every_webhook_with_a_link(
    api: Api,
    hook: Hook,  # noqa: F811
) -> None:
    token = (await api.session())["key"]["token"]
    asked = await api.ok(
        "POST",
        "/api/v1/check",
        token,
        json={"channel": "shell", "action": {"command": CLOUD}},
    )
    approval_id = asked["approval"]["id"]
    for _ in range(200):
        if len(hook.received) == 2:
            break
        await asyncio.sleep(0.02)
    by_path = {r["path"]: r["body"] for r in hook.received}
    link = f"https://pilothouse.example.com/api/v1/approvals/{approval_id}"
    generic = by_path["/generic"]
    assert generic["type"] == "approval.requested" and generic["link"] == link
    assert generic["approval"]["id"] == approval_id
    assert generic["approval"]["action"] == {"command": CLOUD}
    slack = by_path["/slack"]["text"]
    assert CLOUD in slack and link in slack and "deletes cloud or cluster resources" in slack
    # An ask that reuses the pending approval announces nothing new.
    await api.ok(
        "POST", "/api/v1/check", token, json={"channel": "shell", "action": {"command": CLOUD}}
    )
    await asyncio.sleep(0.2)
    assert len(hook.received) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_policy_file_is_the_policy_and_the_api_cannot_change_it(
    tmp_path: Path, database_url: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(FILE_POLICY)
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        policy_file=policy,
        policy_file_poll_seconds=3600,  # the test syncs itself
    )
    svc: Services = build_services(settings, MutableClock())
    await svc.start(migrate_store=False)
    try:
        transport = httpx.ASGITransport(app=build_app(settings, services=svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert svc.bootstrap_result is not None and svc.bootstrap_result.owner_token
            api = Api(client, svc.bootstrap_result.owner_token)
            active = await api.ok("GET", "/api/v1/policy")
            assert active["version"] == 1 and active["origin"] == "file"
            assert active["source"] == FILE_POLICY
            refused = await api.call("PUT", "/api/v1/policy", json={"source": "default: deny\n"})
            assert refused.status_code == 409 and "policy_file" in refused.text

            policy.write_text("rules: [\n")  # broken: logged, and the active policy stays
            await svc._sync_policy_file()
            assert (await api.ok("GET", "/api/v1/policy"))["version"] == 1

            policy.write_text(FILE_POLICY.replace("make", "gmake"))
            await svc._sync_policy_file()
            await svc._sync_policy_file()  # unchanged since: nothing new is stored
            versions = await api.ok("GET", "/api/v1/policy/versions")
            assert [v["version"] for v in versions["data"]] == [2, 1, 0]
            token = (await api.session())["key"]["token"]
            check = {"channel": "shell", "action": {"command": "gmake all"}}
            assert (await api.ok("POST", "/api/v1/check", token, json=check))["decision"] == "deny"
    finally:
        await svc.close()
