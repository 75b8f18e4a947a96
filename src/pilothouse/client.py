"""A small typed client for harness authors: ask Pilothouse before an agent acts.

A harness (the loop that runs an agent's tools) calls :meth:`Pilothouse.check` before each
action and runs the action only if the answer is ``allow``::

    from pilothouse.client import Pilothouse, PilothouseError, PilothouseUnavailable

    with Pilothouse("http://127.0.0.1:7450", session_key) as ph:
        try:
            result = ph.check("shell", command="rm -rf build", wait=120)
        except (PilothouseError, PilothouseUnavailable) as exc:
            refuse(f"Pilothouse could not be asked: {exc}")  # fail closed
        else:
            if result.allowed:
                run()
            else:
                refuse(result.reason)

``wait`` long-polls: when a rule asks a human, the call returns once someone approves or
denies (``allow``/``deny``, the approval saying who) or after ``wait`` seconds (still ``ask``).
A key that acts for several sessions (a service or user key) names the session in each call
(``session_id``), or opens one with :meth:`Pilothouse.open_session` and uses its key.

:class:`AsyncPilothouse` has the same methods, awaited. Errors: the server's answer to a bad
request is a :class:`PilothouseError` (status, stable code, message, details); a server that
cannot be reached or does not answer in time is :class:`PilothouseUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote

import httpx

from pilothouse import __version__

__all__ = [
    "Approval",
    "ApprovalStatus",
    "AsyncPilothouse",
    "Channel",
    "CheckResult",
    "Decision",
    "Finding",
    "Hit",
    "OpenedSession",
    "Pilothouse",
    "PilothouseError",
    "PilothouseUnavailable",
    "ScanResult",
    "Session",
]

Channel = Literal["shell", "file_read", "file_write", "http", "git", "mcp", "llm", "secret"]
Decision = Literal["allow", "deny", "ask"]
ApprovalStatus = Literal["pending", "approved", "denied", "expired"]

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
WAIT_MARGIN = 15.0
"""Seconds a long-polling check may take beyond its ``wait`` before the client gives up."""
PAGE_SIZE = 100


class PilothouseError(Exception):
    """Pilothouse answered with an error: ``status``, a stable ``code``, ``message``, ``details``.

    (The client's view of the server's error envelope; the server's own error tree is
    :mod:`pilothouse.errors`.)
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: Mapping[str, Any] = details or {}
        self.request_id = request_id


class PilothouseUnavailable(Exception):
    """Pilothouse could not be reached, or did not answer in time; nothing was decided."""


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """A human's decision on an action a rule asked about (``pending`` until one is made).

    A check's answer carries the approval's state; the approvals calls show all of it
    (``channel``, ``action`` and the rest are None where the server did not send them).
    """

    id: str
    status: ApprovalStatus
    expires_at: datetime
    decided_by: str | None
    comment: str | None
    channel: str | None = None
    action: Mapping[str, Any] | None = None
    session_id: str | None = None
    reason: str | None = None
    rule: str | None = None
    created_at: datetime | None = None
    decided_at: datetime | None = None
    action_hash: str | None = None


@dataclass(frozen=True)
class Hit:
    """A rule that matched the action (``report``: recorded, not enforced)."""

    rule: str
    decision: Decision
    reason: str
    pack: str | None
    report: bool


@dataclass(frozen=True)
class CheckResult:
    """Pilothouse's answer to a check."""

    check_id: str
    decision: Decision
    reason: str
    rule: str | None
    approval: Approval | None
    hits: tuple[Hit, ...]
    policy_version: int

    @property
    def allowed(self) -> bool:
        """Whether the action may run now."""
        return self.decision == "allow"


@dataclass(frozen=True)
class Finding:
    """One thing a scan found."""

    kind: str
    pattern: str
    excerpt: str


@dataclass(frozen=True)
class ScanResult:
    """What a scan found, and whether the session is now tainted."""

    flagged: bool
    score: float
    findings: tuple[Finding, ...]
    tainted: bool


@dataclass(frozen=True)
class Session:
    """An agent session (``context``: everything else the server shows, e.g. ``project``)."""

    id: str
    status: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    outcome: str | None
    labels: Mapping[str, str]
    context: Mapping[str, Any]


@dataclass(frozen=True)
class OpenedSession:
    """A new session and its key; the key is shown this once and is left out of ``repr``."""

    session: Session
    token: str = field(repr=False)


# --- reading answers -------------------------------------------------------------------------


def _moment(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _maybe_moment(value: Any) -> datetime | None:
    return None if value is None else _moment(value)


def _approval(data: Mapping[str, Any]) -> Approval:
    return Approval(
        id=data["id"],
        status=data["status"],
        expires_at=_moment(data["expires_at"]),
        decided_by=data.get("decided_by"),
        comment=data.get("comment"),
        channel=data.get("channel"),
        action=data.get("action"),
        session_id=data.get("session_id"),
        reason=data.get("reason"),
        rule=data.get("rule"),
        created_at=_maybe_moment(data.get("created_at")),
        decided_at=_maybe_moment(data.get("decided_at")),
        action_hash=data.get("action_hash"),
    )


def _check_result(data: Mapping[str, Any]) -> CheckResult:
    approval = data.get("approval")
    return CheckResult(
        check_id=data["check_id"],
        decision=data["decision"],
        reason=data["reason"],
        rule=data.get("rule"),
        approval=_approval(approval) if approval is not None else None,
        hits=tuple(
            Hit(h["rule"], h["decision"], h["reason"], h.get("pack"), bool(h.get("report")))
            for h in data.get("hits", ())
        ),
        policy_version=int(data["policy_version"]),
    )


def _scan_result(data: Mapping[str, Any]) -> ScanResult:
    return ScanResult(
        flagged=bool(data["flagged"]),
        score=float(data["score"]),
        findings=tuple(Finding(f["kind"], f["pattern"], f["excerpt"]) for f in data["findings"]),
        tainted=bool(data["tainted"]),
    )


SESSION_FIELDS = ("id", "status", "created_at", "expires_at", "ended_at", "outcome", "labels")


def _session(data: Mapping[str, Any]) -> Session:
    return Session(
        id=data["id"],
        status=data["status"],
        created_at=_moment(data["created_at"]),
        expires_at=_moment(data["expires_at"]),
        ended_at=_maybe_moment(data.get("ended_at")),
        outcome=data.get("outcome"),
        labels=dict(data.get("labels") or {}),
        context={k: v for k, v in data.items() if k not in SESSION_FIELDS},
    )


def _opened(data: Mapping[str, Any]) -> OpenedSession:
    return OpenedSession(_session(data["session"]), data["key"]["token"])


def _approvals_page(data: Mapping[str, Any]) -> tuple[list[Approval], str | None]:
    return [_approval(item) for item in data["data"]], data.get("next_cursor")


# --- requests --------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call: what to send, how long it may take beyond the usual, how to read it."""

    method: str
    path: str
    read: Callable[[Any], T]
    body: Mapping[str, Any] | None = None
    params: Mapping[str, str | int] | None = None
    extra_seconds: float = 0.0


def _route(*parts: str) -> str:
    """An API path from segments, each escaped so an id cannot reach another route."""
    return "/api/v1" + "".join("/" + quote(part, safe="") for part in parts)


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _action(
    command: str | None,
    path: str | None,
    url: str | None,
    tool: str | None,
    arguments: Mapping[str, Any] | None,
    model: str | None,
    secret: str | None,
) -> dict[str, Any]:
    args = dict(arguments) if arguments is not None else None
    return _given(
        command=command, path=path, url=url, tool=tool, arguments=args, model=model, secret=secret
    )


def _check_call(
    channel: Channel,
    action: Mapping[str, Any],
    wait: float,
    approval_id: str | None,
    session_id: str | None,
    source: Mapping[str, str] | None,
) -> _Call[CheckResult]:
    body = _given(
        channel=channel,
        action=dict(action),
        wait=wait,
        approval_id=approval_id,
        session_id=session_id,
        source=dict(source) if source is not None else None,
    )
    return _Call("POST", _route("check"), _check_result, body, extra_seconds=max(wait, 0.0))


def _scan_call(content: str, source: str | None, session_id: str | None) -> _Call[ScanResult]:
    body = _given(content=content, source=source, session_id=session_id)
    return _Call("POST", _route("scan"), _scan_result, body)


def _approvals_call(
    status: str | None, session_id: str | None, cursor: str | None, size: int
) -> _Call[tuple[list[Approval], str | None]]:
    params = _given(status=status, session_id=session_id, cursor=cursor, limit=size)
    return _Call("GET", _route("approvals"), _approvals_page, params=params)


def _decide_call(
    approval_id: str, verdict: Literal["approve", "deny"], body: Mapping[str, Any]
) -> _Call[Approval]:
    return _Call("POST", _route("approvals", approval_id, verdict), _approval, body)


def _error(response: httpx.Response) -> PilothouseError:
    """The PilothouseError a non-2xx answer stands for, the JSON envelope or not."""
    try:
        body = response.json()
        error = body["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return PilothouseError(response.status_code, f"http_{response.status_code}", text)
    details = error.get("details")
    if not isinstance(details, Mapping):  # the envelope may carry details beside the message
        details = {k: v for k, v in error.items() if k not in ("code", "message", "request_id")}
    request_id = error.get("request_id") or body.get("request_id")
    return PilothouseError(response.status_code, code, message, details, request_id)


def _answer(call: _Call[T], response: httpx.Response) -> T:
    """The call's result from the server's response, or the error it stands for."""
    if not response.is_success:
        raise _error(response)
    try:
        return call.read(response.json())
    except (ValueError, KeyError, TypeError) as exc:
        raise PilothouseError(
            response.status_code,
            "invalid_response",
            f"{call.method} {response.url.path} answered with something a Pilothouse server"
            f" does not send ({type(exc).__name__}: {exc}); is the URL right?",
        ) from None


class _Base:
    """What both clients share: the server, the key, timeouts."""

    def __init__(self, url: str, key: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {
            "authorization": f"Bearer {key}",
            "user-agent": f"pilothouse-client/{__version__}",
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _timeout(self, call: _Call[Any]) -> httpx.Timeout:
        read = self.timeout + call.extra_seconds + (WAIT_MARGIN if call.extra_seconds else 0.0)
        return httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout), read=read)

    def _unavailable(self, call: _Call[Any], exc: httpx.HTTPError) -> PilothouseUnavailable:
        if isinstance(exc, httpx.TimeoutException):
            what = "did not answer in time"
        else:
            what = f"could not be reached ({type(exc).__name__}: {exc})"
        return PilothouseUnavailable(f"Pilothouse at {self.url} {what}: {call.method} {call.path}")


class Pilothouse(_Base):
    """Pilothouse's API as one key sees it (blocking; see :class:`AsyncPilothouse`)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, key, timeout)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(
                call.method,
                call.path,
                json=call.body,
                params=call.params,
                timeout=self._timeout(call),
            )
        except httpx.HTTPError as exc:
            raise self._unavailable(call, exc) from exc
        return _answer(call, response)

    def check(
        self,
        channel: Channel,
        *,
        command: str | None = None,
        path: str | None = None,
        url: str | None = None,
        tool: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        model: str | None = None,
        secret: str | None = None,
        wait: float = 0,
        approval_id: str | None = None,
        session_id: str | None = None,
        source: Mapping[str, str] | None = None,
    ) -> CheckResult:
        """Ask whether an action may run; with ``wait``, wait that long for a human's decision.

        Give the field the channel needs (``command`` for shell and git, ``path`` for files,
        ``url`` for http, ``tool`` and ``arguments`` for mcp). ``source`` (``client``, ``tool``,
        ``tool_use_id``) is recorded with the check.
        """
        action = _action(command, path, url, tool, arguments, model, secret)
        return self._run(_check_call(channel, action, wait, approval_id, session_id, source))

    def scan(
        self, content: str, *, source: str | None = None, session_id: str | None = None
    ) -> ScanResult:
        """Scan content the agent read for prompt injection (a flagged session is tainted)."""
        return self._run(_scan_call(content, source, session_id))

    def approvals(
        self, status: str | None = "pending", *, session_id: str | None = None, limit: int = 500
    ) -> list[Approval]:
        """Approvals, newest first (``status=None``: all of them), up to ``limit``."""
        found: list[Approval] = []
        cursor: str | None = None
        while len(found) < limit:
            size = min(PAGE_SIZE, limit - len(found))
            page, cursor = self._run(_approvals_call(status, session_id, cursor, size))
            found.extend(page)
            if cursor is None or not page:
                break
        return found

    def approval(self, approval_id: str) -> Approval:
        """One approval."""
        return self._run(_Call("GET", _route("approvals", approval_id), _approval))

    def approve(
        self, approval_id: str, comment: str | None = None, add_rule: bool = False
    ) -> Approval:
        """Let the waiting action run once (``add_rule``: from now on, by a policy exception)."""
        body = _given(comment=comment, add_rule=add_rule or None)
        return self._run(_decide_call(approval_id, "approve", body))

    def deny(self, approval_id: str, comment: str | None = None) -> Approval:
        """Refuse the waiting action."""
        return self._run(_decide_call(approval_id, "deny", _given(comment=comment)))

    def open_session(self, **context: Any) -> OpenedSession:
        """Open an agent session with its context (``project``, ``repository``, ``labels``...)."""
        return self._run(_Call("POST", _route("sessions"), _opened, context))

    def end_session(self, session_id: str, outcome: str, detail: str | None = None) -> Session:
        """End a session with its outcome (``succeeded``, ``failed``, ``cancelled``...)."""
        body = _given(outcome=outcome, detail=detail)
        return self._run(_Call("POST", _route("sessions", session_id, "end"), _session, body))


class AsyncPilothouse(_Base):
    """The same as :class:`Pilothouse`, for asyncio: every call is awaited."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, key, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                json=call.body,
                params=call.params,
                timeout=self._timeout(call),
            )
        except httpx.HTTPError as exc:
            raise self._unavailable(call, exc) from exc
        return _answer(call, response)

    async def check(
        self,
        channel: Channel,
        *,
        command: str | None = None,
        path: str | None = None,
        url: str | None = None,
        tool: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        model: str | None = None,
        secret: str | None = None,
        wait: float = 0,
        approval_id: str | None = None,
        session_id: str | None = None,
        source: Mapping[str, str] | None = None,
    ) -> CheckResult:
        """Ask whether an action may run (see :meth:`Pilothouse.check`)."""
        action = _action(command, path, url, tool, arguments, model, secret)
        return await self._run(_check_call(channel, action, wait, approval_id, session_id, source))

    async def scan(
        self, content: str, *, source: str | None = None, session_id: str | None = None
    ) -> ScanResult:
        """Scan content the agent read for prompt injection."""
        return await self._run(_scan_call(content, source, session_id))

    async def approvals(
        self, status: str | None = "pending", *, session_id: str | None = None, limit: int = 500
    ) -> list[Approval]:
        """Approvals, newest first, up to ``limit``."""
        found: list[Approval] = []
        cursor: str | None = None
        while len(found) < limit:
            size = min(PAGE_SIZE, limit - len(found))
            page, cursor = await self._run(_approvals_call(status, session_id, cursor, size))
            found.extend(page)
            if cursor is None or not page:
                break
        return found

    async def approval(self, approval_id: str) -> Approval:
        """One approval."""
        return await self._run(_Call("GET", _route("approvals", approval_id), _approval))

    async def approve(
        self, approval_id: str, comment: str | None = None, add_rule: bool = False
    ) -> Approval:
        """Let the waiting action run once (``add_rule``: from now on)."""
        body = _given(comment=comment, add_rule=add_rule or None)
        return await self._run(_decide_call(approval_id, "approve", body))

    async def deny(self, approval_id: str, comment: str | None = None) -> Approval:
        """Refuse the waiting action."""
        return await self._run(_decide_call(approval_id, "deny", _given(comment=comment)))

    async def open_session(self, **context: Any) -> OpenedSession:
        """Open an agent session with its context."""
        return await self._run(_Call("POST", _route("sessions"), _opened, context))

    async def end_session(
        self, session_id: str, outcome: str, detail: str | None = None
    ) -> Session:
        """End a session with its outcome."""
        body = _given(outcome=outcome, detail=detail)
        return await self._run(_Call("POST", _route("sessions", session_id, "end"), _session, body))
