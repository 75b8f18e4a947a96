"""A browser's side of the dashboard in tests: cookies kept, forms posted with the CSRF token
the page carried."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import Api

PASSWORD = "correct horse battery staple"
HTML = {"accept": "text/html"}


def csrf_of(html: str) -> str:
    """The CSRF token a page's form carries."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


class Browser:
    """One person's browser on the dashboard (its own cookie jar)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.http = httpx.AsyncClient(
            transport=client._transport,
            base_url=client.base_url,
            headers=HTML,
        )

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def sign_in(self, email: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
        form = await self.http.get("/login")
        body = {"csrf": csrf_of(form.text), "email": email, "password": password, **extra}
        return await self.http.post("/login", data=body)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, **kwargs)

    async def post_form(self, page: str, action: str, **fields: str) -> httpx.Response:
        """Post the form of ``page`` to ``action`` with its CSRF token and ``fields``."""
        shown = await self.http.get(page)
        return await self.http.post(action, data={"csrf": csrf_of(shown.text), **fields})


async def person(api: Api, role: str, **session: Any) -> tuple[str, str, str]:
    """A person with ``role``, a password and a key: (user id, email, key token)."""
    user_id, token = await api.user_with_key(role)
    user = await api.ok("GET", f"/api/v1/users/{user_id}")
    await api.ok("POST", f"/api/v1/users/{user_id}/password", json={"password": PASSWORD})
    return user_id, user["email"], token
