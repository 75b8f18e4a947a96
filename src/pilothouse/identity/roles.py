"""Roles and what each may do. The single table every admin route consults."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A human's role in an organization."""

    OWNER = "owner"
    ADMIN = "admin"
    SECURITY = "security"
    FINANCE = "finance"
    AUDITOR = "auditor"
    MEMBER = "member"


class Permission(StrEnum):
    """One thing an admin route does."""

    ORG_READ = "org:read"
    ORG_CREATE = "org:create"
    TEAMS_READ = "teams:read"
    TEAMS_WRITE = "teams:write"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    KEYS_OWN = "keys:own"
    KEYS_READ_ALL = "keys:read_all"
    KEYS_REVOKE_ANY = "keys:revoke_any"
    KEYS_MANAGE = "keys:manage"
    SESSIONS_READ = "sessions:read"
    SESSIONS_WRITE = "sessions:write"
    SESSIONS_MANAGE = "sessions:manage"
    AUDIT_READ = "audit:read"
    USAGE_READ = "usage:read"
    BUDGETS_READ = "budgets:read"
    BUDGETS_WRITE = "budgets:write"
    POLICY_READ = "policy:read"
    POLICY_WRITE = "policy:write"
    POLICY_CHECK = "policy:check"
    APPROVALS_READ = "approvals:read"
    APPROVALS_DECIDE = "approvals:decide"
    SECRETS_READ = "secrets:read"
    SECRETS_WRITE = "secrets:write"
    MCP_READ = "mcp:read"
    MCP_WRITE = "mcp:write"


_ALL_HUMANS = frozenset(Role)
_READ = {
    Permission.ORG_READ,
    Permission.TEAMS_READ,
    Permission.USERS_READ,
    Permission.KEYS_OWN,
    Permission.POLICY_CHECK,
}

GRANTS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission) - {Permission.ORG_CREATE},
    Role.ADMIN: frozenset(Permission) - {Permission.ORG_CREATE},
    Role.SECURITY: frozenset(
        _READ
        | {
            Permission.KEYS_READ_ALL,
            Permission.KEYS_REVOKE_ANY,
            Permission.SESSIONS_READ,
            Permission.AUDIT_READ,
            Permission.POLICY_READ,
            Permission.POLICY_WRITE,
            Permission.APPROVALS_READ,
            Permission.APPROVALS_DECIDE,
            Permission.SECRETS_READ,
            Permission.SECRETS_WRITE,
            Permission.MCP_READ,
            Permission.MCP_WRITE,
        }
    ),
    Role.FINANCE: frozenset(
        _READ
        | {
            Permission.SESSIONS_READ,
            Permission.USAGE_READ,
            Permission.BUDGETS_READ,
            Permission.BUDGETS_WRITE,
        }
    ),
    # Auditors read usage: who spent what on which session is part of the record they oversee,
    # usage rows hold no request bodies or secrets, and auditors already read every session and
    # the audit log. Security's work is keys, sessions and the audit log, not spend: no usage.
    Role.AUDITOR: frozenset(
        _READ
        | {
            Permission.KEYS_READ_ALL,
            Permission.SESSIONS_READ,
            Permission.AUDIT_READ,
            Permission.USAGE_READ,
            Permission.BUDGETS_READ,
            Permission.POLICY_READ,
            Permission.APPROVALS_READ,
            Permission.SECRETS_READ,
            Permission.MCP_READ,
        }
    ),
    Role.MEMBER: frozenset(_READ | {Permission.SESSIONS_READ, Permission.SESSIONS_WRITE}),
}
"""Role -> permissions. ORG_CREATE is granted only to owners of the root organization."""

SERVICE_SCOPES = frozenset(
    {
        "sessions:write",
        "sessions:declare",
        "usage:read",
        "budgets:read",
        "budgets:write",
        "policy:check",
    }
)
"""Scopes a service key may hold: open/end sessions; declare a session and labels by header;
read usage and spend (a finance export or a BI job); read budgets, or manage them (a job that
provisions budgets from a finance system); check actions for the organization's sessions (a
harness that asks on its agents' behalf). No scope decides an approval: only people do."""

SCOPE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "sessions:write": frozenset({Permission.SESSIONS_WRITE}),
    "sessions:declare": frozenset(),
    "usage:read": frozenset({Permission.USAGE_READ}),
    "budgets:read": frozenset({Permission.BUDGETS_READ}),
    # Managing budgets means reading them back: a provisioning job reconciles what exists.
    "budgets:write": frozenset({Permission.BUDGETS_READ, Permission.BUDGETS_WRITE}),
    "policy:check": frozenset({Permission.POLICY_CHECK}),
}


def role_allows(role: Role, permission: Permission) -> bool:
    """Whether ``role`` carries ``permission``."""
    return permission in GRANTS[role]


assert set(GRANTS) == set(_ALL_HUMANS)
