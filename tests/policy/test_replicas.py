"""Two replicas on one PostgreSQL: an approval asked on one is seen, decided and answered across
them, and a policy stored through one decides on the other."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from pilothouse.policy.approvals import POLL_SECONDS
from tests.conftest import bearer
from tests.identity.test_replicas import two_replicas  # noqa: F401  (the fixture)

CLOUD = "kubectl delete namespace staging"


def _session(http: httpx.Client, url: str, owner: str) -> str:
    opened = http.post(f"{url}/api/v1/sessions", headers=bearer(owner), json={})
    assert opened.status_code == 201, opened.text
    return str(opened.json()["key"]["token"])


def _approver(http: httpx.Client, url: str, owner: str) -> str:
    user = http.post(
        f"{url}/api/v1/users",
        headers=bearer(owner),
        json={"email": "sec@example.com", "role": "security"},
    ).json()
    return str(
        http.post(f"{url}/api/v1/keys", headers=bearer(owner), json={"user_id": user["id"]}).json()[
            "token"
        ]
    )


def test_an_approval_asked_on_one_replica_is_decided_on_the_other_and_answered_at_once(
    two_replicas: tuple[str, str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    url_a, url_b, owner = two_replicas
    with httpx.Client(timeout=60) as http:
        token = _session(http, url_a, owner)
        security = _approver(http, url_b, owner)
        answer: dict[str, Any] = {}

        def waiting() -> None:
            reply = http.post(
                f"{url_a}/api/v1/check",
                headers=bearer(token),
                json={"channel": "shell", "action": {"command": CLOUD}, "wait": 30},
            )
            answer.update(reply.json(), answered_at=time.monotonic())

        thread = threading.Thread(target=waiting)
        thread.start()
        pending: list[dict[str, Any]] = []
        for _ in range(500):
            pending = http.get(
                f"{url_b}/api/v1/approvals?status=pending", headers=bearer(security)
            ).json()["data"]
            if pending:
                break
            time.sleep(0.02)
        assert len(pending) == 1 and pending[0]["action"] == {"command": CLOUD}
        time.sleep(0.3)  # the check on A is parked in its wait by now
        decided = http.post(
            f"{url_b}/api/v1/approvals/{pending[0]['id']}/approve",
            headers=bearer(security),
            json={"comment": "go"},
        )
        decided_at = time.monotonic()
        assert decided.status_code == 200, decided.text
        thread.join(timeout=30)
        assert answer["decision"] == "allow" and "go" in answer["reason"]
        # Woken by B's notification, not by A's fallback re-read.
        assert answer["answered_at"] - decided_at < POLL_SECONDS * 0.75
        # Approved once: a second approval of the same decision elsewhere is refused.
        again = http.post(
            f"{url_a}/api/v1/approvals/{pending[0]['id']}/deny", headers=bearer(security), json={}
        )
        assert again.status_code == 409


def test_a_policy_stored_through_one_replica_decides_on_the_other(
    two_replicas: tuple[str, str, str],  # noqa: F811
) -> None:
    url_a, url_b, owner = two_replicas
    deny_make = (
        "rules:\n  - id: no-make\n    channel: shell\n    match: {program: make}\n"
        "    decision: deny\n    reason: no make\n"
    )
    with httpx.Client(timeout=10) as http:
        token = _session(http, url_a, owner)
        body = {"channel": "shell", "action": {"command": "make"}}
        first = http.post(f"{url_a}/api/v1/check", headers=bearer(token), json=body).json()
        assert first["decision"] == "allow"  # and A now holds the policy in memory
        stored = http.put(
            f"{url_b}/api/v1/policy", headers=bearer(owner), json={"source": deny_make}
        )
        assert stored.status_code == 200, stored.text
        started = time.monotonic()
        decision = "allow"
        while time.monotonic() - started < 3:
            decision = http.post(f"{url_a}/api/v1/check", headers=bearer(token), json=body).json()[
                "decision"
            ]
            if decision == "deny":
                break
            time.sleep(0.02)
        assert decision == "deny"
        assert time.monotonic() - started < 2.0
