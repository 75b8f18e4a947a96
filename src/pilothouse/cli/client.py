"""The CLI's HTTP access to a running server: connection options, the error envelope, pages.

Every client command takes ``--url``, ``--key`` and ``--json``; :func:`connect` turns the first
two into an :class:`ApiClient` (falling back to ``PILOTHOUSE_URL`` / ``PILOTHOUSE_API_KEY``
through :func:`pilothouse.settings.load_client_settings`) and turns every failure into one line
on stderr and an exit status: 1 for an API error or an unreachable server, 2 for a missing key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from pilothouse import __version__
from pilothouse.cli.output import fail
from pilothouse.settings import load_client_settings

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
MAX_PAGE = 500
"""The largest page the API serves; longer lists are read by following ``next_cursor``."""

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        metavar="URL",
        help="Server URL; else $PILOTHOUSE_URL, else http://127.0.0.1:7450.",
        show_default=False,
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key", metavar="KEY", help="API key; else $PILOTHOUSE_API_KEY.", show_default=False
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the raw JSON response instead of a table.")
]
LimitOption = Annotated[
    int,
    typer.Option(
        "--limit",
        metavar="N",
        min=1,
        max=100_000,
        help="Show at most this many; pages beyond the first are followed.",
    ),
]

Params = Mapping[str, str | int | bool | list[str] | None]


def route(*parts: str) -> str:
    """An API path from segments, each escaped so an id cannot reach another route."""
    return "".join("/" + quote(part, safe="") for part in parts)


class ApiError(Exception):
    """The server answered with the error envelope (or an unexpected non-2xx response)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ApiClient:
    """The admin API under ``/api/v1`` as one key sees it."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def get(self, path: str, params: Params | None = None) -> Any:
        """GET ``path`` and return its JSON body."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST ``body`` as JSON to ``path`` and return the JSON answer."""
        return self.request("POST", path, body=body if body is not None else {})

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        """PUT ``body`` as JSON to ``path`` and return the JSON answer."""
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        """PATCH ``path`` with ``body`` and return the JSON answer."""
        return self.request("PATCH", path, body=body)

    def delete(self, path: str) -> Any:
        """DELETE ``path``; None when the server answers 204."""
        return self.request("DELETE", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call the API; raise ApiError for any non-2xx answer. None/False params are omitted."""
        query = {k: v for k, v in (params or {}).items() if v is not None and v is not False}
        response = self._http.request(method, "/api/v1" + path, params=query, json=body)
        if not response.is_success:
            raise api_error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code,
                "not_json",
                f"{method} {response.url.path} answered with something other than JSON;"
                " is --url a Pilothouse server?",
            ) from None

    def pages(
        self, path: str, params: Params, limit: int, *, page_size: int = MAX_PAGE
    ) -> dict[str, Any]:
        """Up to ``limit`` items of a paged list, following ``next_cursor`` as needed.

        The result has the API's page shape: ``data`` and the ``next_cursor`` that reads on.
        """
        items: list[Any] = []
        cursor: str | None = None
        while True:
            want = min(limit - len(items), page_size)
            page = self.get(path, {**params, "limit": want, "cursor": cursor})
            items.extend(page["data"])
            cursor = page.get("next_cursor")
            if cursor is None or not page["data"] or len(items) >= limit:
                return {"data": items, "next_cursor": cursor}


def api_error(response: httpx.Response) -> ApiError:
    """The ApiError a non-2xx response stands for, envelope or not."""
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return ApiError(response.status_code, f"http_{response.status_code}", text)


@contextmanager
def connect(url: str | None, key: str | None) -> Iterator[ApiClient]:
    """An ApiClient for the resolved server and key; failures print one line and exit."""
    settings = load_client_settings(url, key)
    if settings.api_key is None:
        fail("no API key: pass --key or set PILOTHOUSE_API_KEY", status=2)
    headers = {
        "authorization": f"Bearer {settings.api_key.get_secret_value()}",
        "user-agent": f"pilothouse-cli/{__version__}",
    }
    try:
        with httpx.Client(base_url=settings.url, headers=headers, timeout=TIMEOUT) as http:
            yield ApiClient(http)
    except ApiError as exc:
        fail(f"{exc.code}: {exc.message}")
    except httpx.ConnectError as exc:
        fail(
            f"cannot connect to the Pilothouse server at {settings.url} ({exc}); "
            "is it running? Pass --url or set PILOTHOUSE_URL"
        )
    except httpx.TimeoutException:
        fail(f"the Pilothouse server at {settings.url} did not answer in time")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        fail(f"cannot talk to the Pilothouse server at {settings.url}: {exc}")
