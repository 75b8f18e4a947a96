"""``pilothouse orgs``: the caller's organization is shown; new ones come with an owner key."""

from __future__ import annotations

import uuid

from tests.cli.conftest import Cli


def test_orgs_show_names_the_root_organization(cli: Cli) -> None:
    org = cli.json("orgs", "show")
    assert org["is_root"] is True
    assert org["id"] == cli.json("whoami")["org_id"]
    assert org["name"] in cli.ok("orgs", "show").stdout


def test_a_new_organizations_owner_key_sees_only_that_organization(cli: Cli) -> None:
    name = f"acme-{uuid.uuid4().hex[:8]}"
    created = cli.json("orgs", "create", name, "--owner-email", "boss@acme.example")
    token = created["key"]["token"]
    org = cli.json("orgs", "show", key=token)
    assert (org["id"], org["name"], org["is_root"]) == (created["org"]["id"], name, False)
    assert cli.json("whoami", key=token)["role"] == "owner"
    their_users = cli.json("users", "list", key=token)["data"]
    assert [u["email"] for u in their_users] == ["boss@acme.example"]


def test_orgs_create_prints_the_owner_key_once(cli: Cli) -> None:
    result = cli.ok("orgs", "create", f"beta-{uuid.uuid4().hex[:8]}", "--owner-email", "b@b.io")
    key_lines = [line for line in result.stdout.splitlines() if line.startswith("owner key: ")]
    assert len(key_lines) == 1
    token = key_lines[0].removeprefix("owner key: ")
    assert cli.json("whoami", key=token)["role"] == "owner"


def test_only_root_owners_may_create_organizations(cli: Cli) -> None:
    created = cli.json("orgs", "create", f"gamma-{uuid.uuid4().hex[:8]}", "--owner-email", "g@g.io")
    result = cli.run(
        "orgs", "create", "nested", "--owner-email", "n@n.io", key=created["key"]["token"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: forbidden: ")
