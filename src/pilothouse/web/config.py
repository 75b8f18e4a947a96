"""Dashboard configuration: plain pydantic models with no other Pilothouse imports but roles,
so ``settings`` can hold them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pilothouse.identity.roles import Role


class OidcConfig(BaseModel):
    """The OpenID Connect issuer people sign in to the dashboard with (``oidc:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(
        pattern=r"^https?://\S+$",
        description="The issuer URL; its /.well-known/openid-configuration is read.",
    )
    client_id: str = Field(min_length=1, max_length=400, description="This client's id.")
    client_secret: SecretStr | None = Field(
        None, description="The client secret (a confidential client), if the issuer gave one."
    )
    scopes: str = Field("openid email profile", description="The scopes asked for.")
    organization: str | None = Field(
        None, description="The organization people sign in to (by name); default: the root."
    )
    create_role: Role | None = Field(
        None,
        description="Make a person who signs in for the first time, with this role; unset:"
        " only people already in the organization (by email) may sign in.",
    )
    label: str = Field("Sign in with single sign-on", description="The sign-in button's text.")
