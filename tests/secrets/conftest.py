"""Secrets fixtures: the gateway's fake upstream and in-process SDK transport, shared."""

from __future__ import annotations

from tests.gateway.conftest import gateway_http, upstream

__all__ = ["gateway_http", "upstream"]
