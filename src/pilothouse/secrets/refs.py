"""A reference to a secret Pilothouse holds, as configuration writes it: ``{"$secret": name}``.

Plain pydantic with no other Pilothouse imports, so settings and the gateway's configuration
can hold references; the value is looked up (and the caller's grant checked) when it is used.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class SecretRef(BaseModel):
    """Names a secret of the root organization: ``{"$secret": "openai-key"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    secret: str = Field(alias="$secret", pattern=NAME_PATTERN, description="The secret's name.")
