"""``BackendSpec``: the serializable description of how to reach a backend.

Live HTTP clients cannot cross process boundaries, so the driver ships this
small frozen value instead and every worker rebuilds its own client from it
(:func:`synapse_ray.backend.get_client`). The token is a ``SecretStr`` so it is
masked in ``repr``/``str``/JSON dumps yet still travels inside a pickle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["DEFAULT_CHUNK_SIZE", "ENV_HOST", "ENV_TENANT", "ENV_TOKEN", "BackendSpec"]

# Upstream synapse-sdk's chunk size: few requests per upload (each costs a round trip
# and a few ms of server bookkeeping); memory does not depend on it (1 MiB blocks stream).
DEFAULT_CHUNK_SIZE = 50 * 1024 * 1024
ENV_HOST = "SYNAPSE_HOST"
ENV_TOKEN = "SYNAPSE_ACCESS_TOKEN"
ENV_TENANT = "SYNAPSE_TENANT"

TOKEN_HEADER = "Synapse-Access-Token"
TENANT_HEADER = "Synapse-Tenant"


class BackendSpec(BaseModel):
    """Where the backend is, how to authenticate, and how patient to be."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    token: SecretStr | None = None
    tenant: str | None = None
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    # The longest one call may take, retries and backoff waits included (a
    # transfer gets it afresh after each chunk that gets through).
    total_timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff: float = Field(default=0.5, ge=0)
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        """Reject scheme-less URLs early: httpx would misread ``host:port``."""
        raw = value.strip()
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"base_url must be an http:// or https:// URL, got {value!r} "
                f"(for example 'http://127.0.0.1:8765/')"
            )
        if parts.username or parts.password:
            # the URL is shown in reprs, logs and errors: credentials must not ride in it
            raise ValueError(
                "base_url must not carry credentials (user:password@); put the token in "
                "SYNAPSE_ACCESS_TOKEN / BackendSpec(token=...)"
            )
        return raw if raw.endswith("/") else raw + "/"

    @field_validator("tenant")
    @classmethod
    def _blank_tenant_is_none(cls, value: str | None) -> str | None:
        return value or None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackendSpec | None:
        """Build from ``SYNAPSE_HOST``/``SYNAPSE_ACCESS_TOKEN``/``SYNAPSE_TENANT``.

        Returns ``None`` when ``SYNAPSE_HOST`` is unset or empty, which callers
        read as "no backend configured" (and may start the embedded one).
        """
        source = os.environ if env is None else env
        host = source.get(ENV_HOST, "").strip()
        if not host:
            return None
        token = source.get(ENV_TOKEN, "").strip() or None
        tenant = source.get(ENV_TENANT, "").strip() or None
        return cls(base_url=host, token=SecretStr(token) if token else None, tenant=tenant)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> BackendSpec:
        """Copy with changes, *validated* (pydantic's default skips validation,
        which would let a plain-``str`` token or a scheme-less URL slip in)."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self).model_validate({**dict(self), **update})

    def headers(self) -> dict[str, str]:
        """Auth headers for requests to this backend's own origin only."""
        out: dict[str, str] = {}
        if self.token is not None:
            out[TOKEN_HEADER] = f"Token {self.token.get_secret_value()}"
        if self.tenant:
            out[TENANT_HEADER] = self.tenant
        return out

    def timeout(self) -> httpx.Timeout:
        """Timeouts are always set: a hung backend must not hang a run."""
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)

    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port) used to decide whether a URL gets the auth headers."""
        return url_origin(self.base_url)


def url_origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port
