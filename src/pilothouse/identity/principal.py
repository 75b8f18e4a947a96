"""The Principal: who is calling, resolved once per request by authentication."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pilothouse.identity.roles import SCOPE_PERMISSIONS, Permission, Role, role_allows
from pilothouse.identity.tokens import KeyKind


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What a session says about the work it does: everything usage is attributed to."""

    id: str
    user_id: str | None = None
    team_id: str | None = None
    project: str | None = None
    use_case: str | None = None
    repository: str | None = None
    skills: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a human's key, a service key, or an agent session."""

    org_id: str
    key_id: str
    kind: KeyKind
    key_prefix: str
    user_id: str | None = None
    role: Role | None = None
    is_root_org: bool = False
    scopes: frozenset[str] = frozenset()
    session_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    session: SessionContext | None = None

    @property
    def actor_kind(self) -> str:
        """How audit events name this kind of actor."""
        return {KeyKind.USER: "user", KeyKind.SERVICE: "service", KeyKind.SESSION: "session"}[
            self.kind
        ]

    @property
    def actor_id(self) -> str:
        """The id audit events record as the actor."""
        if self.kind is KeyKind.SESSION and self.session_id:
            return self.session_id
        if self.kind is KeyKind.USER and self.user_id:
            return self.user_id
        return self.key_id

    def can(self, permission: Permission) -> bool:
        """Whether this principal holds ``permission``. Session keys hold none."""
        if self.kind is KeyKind.USER and self.role is not None:
            if permission is Permission.ORG_CREATE:
                return self.role is Role.OWNER and self.is_root_org
            return role_allows(self.role, permission)
        if self.kind is KeyKind.SERVICE:
            return any(permission in SCOPE_PERMISSIONS.get(s, ()) for s in self.scopes)
        return False
