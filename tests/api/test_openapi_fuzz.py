"""Schemathesis fuzzes every operation of /api/openapi.json on the in-process app.

Each operation gets valid and invalid requests (positive and negative generation), with its
path ids either generated or naming real objects, sent as the root owner. Every response must
be a non-5xx that the schema documents: its status, content type and body.

The app runs on an event loop this module owns (``asyncio.Runner``), so Hypothesis can drive it
from a plain synchronous test; Schemathesis only generates cases and checks responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import ServerError
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pilothouse.app import build_app
from pilothouse.services import build_services
from pilothouse.settings import Settings
from tests.conftest import MutableClock, bearer

EXAMPLES_PER_OPERATION = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BASE_URL = "http://pilothouse.test"


def _operations() -> list[tuple[str, str]]:
    # Building the app opens no connection; it only lists the routes the schema will hold.
    schema = build_app(Settings(database_url="sqlite+aiosqlite://")).openapi()
    return [(method.upper(), path) for path, ops in schema["paths"].items() for method in ops]


OPERATIONS = _operations()


@dataclass
class FuzzTarget:
    """The running app, the schema it serves, and real object ids to aim path ids at."""

    runner: asyncio.Runner
    client: httpx.AsyncClient
    token: str
    schema: schemathesis.BaseSchema
    real_ids: dict[str, str]

    def send(self, case: schemathesis.Case) -> httpx.Response:
        """Send ``case`` to the app as the root owner."""
        sent = case.as_transport_kwargs(base_url=BASE_URL, headers=bearer(self.token))
        data = sent.get("data")
        request = self.client.request(
            sent["method"],
            sent["url"],
            params=sent.get("params"),
            headers=sent.get("headers"),
            json=sent.get("json"),
            content=data.encode() if isinstance(data, str) else data,
        )
        try:
            return self.runner.run(request)
        except httpx.InvalidURL:
            # A query too long for any HTTP client to send (32 label filters of 2,000
            # characters, say) is not a request the server can be asked to answer.
            hypothesis.reject()

    def strategy(self, method: str, path: str) -> st.SearchStrategy[schemathesis.Case]:
        """Valid and invalid requests, with generated path ids and with ids of real objects."""
        operation = self.schema[path][method]
        names = {p.name for p in operation.path_parameters}
        real = {name: self.real_ids[name] for name in names}
        strategies = []
        for mode in schemathesis.GenerationMode:
            strategies.append(operation.as_strategy(generation_mode=mode))
            if real:
                strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=real))
        return st.one_of(strategies)

    def fuzz(self, method: str, path: str) -> list[int]:
        """Run the examples for one operation, raising on a failed check; the statuses seen."""
        statuses: list[int] = []

        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
        )
        @hypothesis.given(case=self.strategy(method, path))
        def run(case: schemathesis.Case) -> None:
            response = self.send(case)
            statuses.append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        run()
        return statuses


async def _arrange(client: httpx.AsyncClient, token: str) -> dict[str, str]:
    async def ok(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await client.request(method, path, json=body, headers=bearer(token))
        assert response.is_success, response.text
        result: dict[str, Any] = response.json()
        return result

    user = await ok("POST", "/api/v1/users", {"email": "fuzz@example.com"})
    team = await ok("POST", "/api/v1/teams", {"name": "fuzz"})
    await ok("POST", f"/api/v1/teams/{team['id']}/members", {"user_id": user["id"]})
    key = await ok("POST", "/api/v1/keys", {"user_id": user["id"]})
    session = await ok("POST", "/api/v1/sessions", {"user_id": user["id"], "team_id": team["id"]})
    budget = await ok(
        "POST",
        "/api/v1/budgets",
        {"scope_kind": "team", "scope_value": team["id"], "window": "month", "limit_usd": "5"},
    )
    await ok("POST", "/api/v1/secrets", {"name": "fuzz-secret", "value": "fuzz-value-1234"})
    grant = await ok("POST", "/api/v1/secrets/fuzz-secret/grants", {"subject": "*", "use": "lease"})
    session_key = session["key"]["token"]
    check = {"channel": "shell", "action": {"command": "kubectl delete namespace fuzz"}}
    asked = await client.post("/api/v1/check", json=check, headers=bearer(session_key))
    assert asked.status_code == 200, asked.text
    return {
        "approval_id": asked.json()["approval"]["id"],
        "version": "0",
        "budget_id": budget["id"],
        "user_id": user["id"],
        "team_id": team["id"],
        "key_id": key["id"],
        "session_id": session["session"]["id"],
        "name": "fuzz-secret",
        "grant_id": grant["id"],
        "server": "fuzz",  # no MCP server is configured: its pins are not found
        "tool": "add",
    }


@contextmanager
def _start(
    settings: Settings, clock: MutableClock, extend: Callable[[FastAPI], None] | None = None
) -> Iterator[FuzzTarget]:
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        services = build_services(settings, clock)
        runner.run(services.start(migrate_store=False))
        app = build_app(settings, services=services)
        if extend is not None:
            extend(app)
        # A 500 reaches the checks as a response rather than as an exception in the client.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url=BASE_URL)
        try:
            assert services.bootstrap_result is not None
            token = services.bootstrap_result.owner_token
            assert token is not None
            served = runner.run(client.get("/api/openapi.json")).json()
            schema = schemathesis.openapi.from_dict(served, config=SchemathesisConfig())
            real_ids = runner.run(_arrange(client, token))
            yield FuzzTarget(runner, client, token, schema, real_ids)
        finally:
            runner.run(client.aclose())
            runner.run(services.close())


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis's caches (unicode tables, constants) go to a temporary directory, not the repo."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture
def fuzz_target(settings: Settings, clock: MutableClock) -> Iterator[FuzzTarget]:
    """The app on its own event loop, with a user, team, key and session to aim at."""
    with _start(settings, clock) as target:
        yield target


@pytest.mark.parametrize("operation", OPERATIONS, ids=" ".join)
def test_every_operation_answers_fuzzed_requests_as_its_schema_documents(
    fuzz_target: FuzzTarget, operation: tuple[str, str]
) -> None:
    statuses = fuzz_target.fuzz(*operation)
    assert statuses, "no example was sent"
    assert 401 not in statuses, "the owner key was refused: the examples never reached the route"


def test_the_fuzzer_fails_when_a_route_answers_500(settings: Settings, clock: MutableClock) -> None:
    def add_failing_route(app: FastAPI) -> None:
        async def broken() -> dict[str, str]:
            raise RuntimeError("a bug")

        app.add_api_route("/api/v1/broken", broken, methods=["GET"])

    with (
        _start(settings, clock, add_failing_route) as target,
        pytest.raises(FailureGroup) as failed,
    ):
        target.fuzz("GET", "/api/v1/broken")
    assert failed.group_contains(ServerError)
