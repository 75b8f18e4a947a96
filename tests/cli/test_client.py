"""The CLI's API client follows ``next_cursor`` across pages and escapes ids in paths."""

from __future__ import annotations

import uuid

import httpx

from pilothouse.cli.client import ApiClient, route
from tests.cli.conftest import Cli, RunningServer


def _client(server: RunningServer) -> httpx.Client:
    headers = {"authorization": f"Bearer {server.owner_token}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def test_pages_follows_next_cursor_until_the_limit(cli: Cli, server: RunningServer) -> None:
    for _ in range(5):
        cli.json("teams", "create", f"paged-{uuid.uuid4().hex[:8]}")
    with _client(server) as http:
        api = ApiClient(http)
        every = api.pages("/teams", {}, 10_000)["data"]
        five = api.pages("/teams", {}, 5, page_size=2)
        everything = api.pages("/teams", {}, 10_000, page_size=2)
    assert [t["id"] for t in five["data"]] == [t["id"] for t in every[:5]]
    assert five["next_cursor"] == five["data"][-1]["id"]
    assert [t["id"] for t in everything["data"]] == [t["id"] for t in every]
    assert everything["next_cursor"] is None


def test_route_escapes_each_segment() -> None:
    assert route("teams", "a/b", "members") == "/teams/a%2Fb/members"
    assert route("users", "x?y#z") == "/users/x%3Fy%23z"
