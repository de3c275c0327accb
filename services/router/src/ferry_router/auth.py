"""JWT authentication of ``/v1/*`` requests (spec §9).

Configured by the ``auth`` section of ``routerConfiguration``::

    auth:
      issuer: https://issuer.example
      audiences: [ferry]            # optional; the token's aud must contain one
      jwksUri: https://issuer.example/.well-known/jwks.json
      jwksFile: /etc/ferry/jwks/jwks.json   # Ferry: a JWKS mounted from a Secret (instead of jwksUri)
      refreshInterval: 168h         # Ferry: how often the JWKS is re-read (Kthena: 7 days, fixed)

Authentication is on when ``jwksUri`` or ``jwksFile`` is set. A request needs
``Authorization: Bearer <token>``; the signature is checked with the JWKS key named by the token's
``kid`` (the only key when there is one and no ``kid``) and the algorithm that key is for (never
``none``, never an HMAC with a public key); ``iss`` must equal the issuer, ``aud`` must contain one
of the audiences when any are configured, ``exp`` is required and in the future, ``nbf`` not in the
future, ``iat`` at most one minute ahead, and ``sub`` (the user id fairness and rate limits see) is
required. The JWKS is fetched at start (3 attempts), every ``refreshInterval``, and at once when a
token names a ``kid`` the set lacks (at most every 30 s), so a key rotation needs no restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import yaml
from prometheus_client import Counter

from ferry_router.durations import parse_duration

log = logging.getLogger(__name__)

AUTH_FAILURES = Counter(
    "ferry_router_auth_failures_total", "Requests refused with 401, by reason.", ["reason"]
)
KID_REFRESH_SPACING = 30.0
IAT_SKEW = 60.0


class AuthError(Exception):
    """Why a request is not authenticated (the message goes into the 401 body)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AuthConfig:
    issuer: str = ""
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks_file: str = ""
    refresh_interval: float = 7 * 86400.0

    @property
    def enabled(self) -> bool:
        return bool(self.jwks_uri or self.jwks_file)


def parse_auth(section: Any) -> AuthConfig:
    """The ``auth`` section; raises ``ValueError`` naming the bad field."""
    if not section:
        return AuthConfig()
    if not isinstance(section, dict):
        raise ValueError("auth must be a mapping")
    audiences = section.get("audiences") or []
    if isinstance(audiences, str):
        audiences = [audiences]
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise ValueError("auth.audiences must be a list of strings")
    interval = section.get("refreshInterval")
    config = AuthConfig(
        issuer=str(section.get("issuer") or ""),
        audiences=tuple(audiences),
        jwks_uri=str(section.get("jwksUri") or ""),
        jwks_file=str(section.get("jwksFile") or ""),
        refresh_interval=parse_duration(str(interval)) if interval else 7 * 86400.0,
    )
    if config.jwks_uri and config.jwks_file:
        raise ValueError("auth: set jwksUri or jwksFile, not both")
    if config.enabled and not config.issuer:
        raise ValueError("auth.issuer is required when a JWKS is configured")
    return config


def load_auth(path: str) -> AuthConfig:
    """The ``auth`` section of the ``routerConfiguration`` file at ``path`` (off when empty)."""
    if not path:
        return AuthConfig()
    doc = yaml.safe_load(Path(path).read_text()) or {}
    return parse_auth(doc.get("auth") if isinstance(doc, dict) else None)


def bearer_token(header: str | None) -> str:
    """The token of ``Bearer <token>`` (scheme case-insensitive, exactly two fields)."""
    if not header:
        raise AuthError("Authorization header missing", "missing")
    fields = header.split()
    if len(fields) != 2 or fields[0].lower() != "bearer" or header != f"{fields[0]} {fields[1]}":
        raise AuthError("Authorization header must be 'Bearer <token>'", "malformed")
    return fields[1]


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    claims: dict[str, Any]


class JWTAuthenticator:
    """Validates bearer tokens against a JWKS that it keeps fresh."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_kid_refresh = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for attempt in range(3):
            try:
                await self.refresh()
                break
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("JWKS load attempt %d failed: %r", attempt + 1, exc)
                await asyncio.sleep(0.5 * (attempt + 1))
        self._task = asyncio.create_task(self._refresh_periodically(), name="router-jwks")

    async def stop(self) -> None:
        for task in (self._task, self._refreshing):
            if task is not None:
                task.cancel()

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval)
            try:
                await self.refresh()
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("JWKS refresh failed (keeping the current keys): %s", exc)

    async def refresh(self) -> None:
        """Fetch the JWKS and replace the key set (a bad set leaves the current one in place)."""
        if self.config.jwks_file:
            raw = await asyncio.to_thread(Path(self.config.jwks_file).read_bytes)
        else:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.config.jwks_uri) as response,
            ):
                if response.status != 200:
                    raise ValueError(f"{self.config.jwks_uri} answered {response.status}")
                raw = await response.read()
        self._keys = keys_of(json.loads(raw))
        log.info("JWKS loaded: %d keys", len(self._keys))

    def _refresh_for_unknown_kid(self) -> None:
        now = time.monotonic()
        if now - self._last_kid_refresh < KID_REFRESH_SPACING:
            return
        if self._refreshing is not None and not self._refreshing.done():
            return
        self._last_kid_refresh = now
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("JWKS refresh for an unknown kid failed: %s", exc)

    async def authenticate(self, header: str | None) -> Identity:
        token = bearer_token(header)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"malformed token: {exc}", "malformed") from None
        key = self._key_for(kid)
        if key is None and kid is not None:
            self._refresh_for_unknown_kid()
            if self._refreshing is not None and not self._refreshing.done():
                await asyncio.shield(self._refreshing)
            key = self._key_for(kid)
        if key is None:
            raise AuthError(f"no signing key {kid!r} in the JWKS", "unknown_key")
        return self.validate(token, key)

    def _key_for(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        if len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return None

    def validate(self, token: str, key: jwt.PyJWK) -> Identity:
        c = self.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                issuer=c.issuer,
                audience=list(c.audiences) or None,
                options={"require": ["exp", "sub"], "verify_iat": False, "verify_aud": bool(c.audiences)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired", "expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(str(exc), "invalid") from None
        iat = claims.get("iat")
        if isinstance(iat, (int, float)) and iat > time.time() + IAT_SKEW:
            raise AuthError("token issued in the future (iat)", "invalid")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError("token has no subject (sub)", "invalid")
        return Identity(user=subject, claims=claims)


def keys_of(document: Any) -> dict[str | None, jwt.PyJWK]:
    """Signing keys of a JWKS by ``kid``; symmetric and unusable keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS is an object with a 'keys' list")
    keys: dict[str | None, jwt.PyJWK] = {}
    for raw in document["keys"]:
        if not isinstance(raw, dict) or raw.get("kty") == "oct" or raw.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(raw)
        except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            log.warning("JWKS key %s skipped: %s", raw.get("kid"), exc)
            continue
        keys[raw.get("kid")] = key
    if not keys:
        raise ValueError("the JWKS has no usable signing key")
    return keys
