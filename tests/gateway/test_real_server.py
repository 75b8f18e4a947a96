"""Through a real uvicorn server: the sync SDKs stream event by event, and Claude Code's probe
of its base URL (a HEAD) is answered."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.conftest import bearer
from tests.servers import RunningServer, running_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server on SQLite."""
    with running_server(tmp_path / "data") as running:
        yield running


def _session_key(server: RunningServer) -> tuple[str, str]:
    opened = httpx.post(
        f"{server.url}/api/v1/sessions",
        headers=bearer(server.owner_token),
        json={"repository": "acme/app"},
    ).json()
    return opened["session"]["id"], opened["key"]["token"]


def _rows(server: RunningServer) -> list[sqlite3.Row]:
    """The usage rows, once the server has written every call it answered (a reply does not
    wait for its row: the call's reservation was durable before it was forwarded; a read
    through the API waits for the rows the server has queued)."""
    read = httpx.get(f"{server.url}/api/v1/usage?limit=1", headers=bearer(server.owner_token))
    assert read.status_code == 200, read.text
    with sqlite3.connect(server.database) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM usage_records ORDER BY created_at").fetchall()


def test_sync_sdks_stream_through_a_real_server_and_are_recorded(server: RunningServer) -> None:
    session_id, key = _session_key(server)
    with openai.OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0) as oa:
        pieces = [
            c.choices[0].delta.content or ""
            for c in oa.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            if c.choices
        ]
    assert len(pieces) > 3
    assert "demo provider" in "".join(pieces)
    with (
        anthropic.Anthropic(api_key=key, base_url=server.url, max_retries=0) as an,
        an.messages.stream(
            model="claude-sonnet-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        text = "".join(stream.text_stream)
    assert "demo provider" in text
    rows = _rows(server)
    assert [r["endpoint"] for r in rows] == ["/v1/chat/completions", "/v1/messages"]
    assert all(r["session_id"] == session_id and r["repository"] == "acme/app" for r in rows)
    assert all(r["status"] == "ok" and r["output_tokens"] > 0 for r in rows)


def test_the_base_url_answers_a_head_probe(server: RunningServer) -> None:
    assert httpx.head(server.url).status_code == 200
