"""Listing users: each with their teams, in pages."""

from __future__ import annotations

from tests.conftest import Api


async def test_the_user_list_shows_each_persons_teams_across_pages(api: Api) -> None:
    teams = [(await api.ok("POST", "/api/v1/teams", json={"name": n}))["id"] for n in "ab"]
    people = [
        (await api.ok("POST", "/api/v1/users", json={"email": f"p{i}@example.com"}))["id"]
        for i in range(5)
    ]
    expected = {people[0]: teams, people[1]: [teams[1]], people[3]: [teams[0]]}
    for user_id, theirs in expected.items():
        for team_id in theirs:
            body = {"user_id": user_id}
            await api.ok("POST", f"/api/v1/teams/{team_id}/members", json=body)
    listed: list[dict[str, object]] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await api.ok("GET", "/api/v1/users", params=params)
        listed += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [user["id"] for user in listed]
    assert len(ids) == len(set(ids)) == 6  # the owner and the five
    assert ids == sorted(ids) or ids == sorted(ids, reverse=True)  # one order across pages
    for user in listed:
        assert user["team_ids"] == sorted(expected.get(str(user["id"]), []))
