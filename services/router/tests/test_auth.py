"""JWT validation (spec §9 and Kthena's auth test table), against keys made here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ferry_router.auth import AuthConfig, AuthError, JWTAuthenticator, bearer_token, keys_of, parse_auth

from .jwt_keys import AUDIENCE, ISSUER, KeySet, SigningKey


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER abc", "abc")],
)
def test_bearer_token_accepts_the_scheme_in_any_case(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    "header", [None, "", "abc", "Basic abc", "Bearer", "Bearer  abc", "Bearer a b", " Bearer a"]
)
def test_bearer_token_refuses_anything_else(header: str | None) -> None:
    with pytest.raises(AuthError):
        bearer_token(header)


def test_parse_auth_needs_an_issuer_and_one_key_source() -> None:
    assert not parse_auth(None).enabled
    config = parse_auth(
        {"issuer": ISSUER, "audiences": ["a"], "jwksUri": "http://x/jwks", "refreshInterval": "1h"}
    )
    assert config.enabled
    assert config.refresh_interval == 3600
    with pytest.raises(ValueError, match="issuer"):
        parse_auth({"jwksUri": "http://x"})
    with pytest.raises(ValueError, match="not both"):
        parse_auth({"issuer": ISSUER, "jwksUri": "http://x", "jwksFile": "/f"})


@pytest.fixture
async def authenticator(tmp_path: Path) -> JWTAuthenticator:
    keys = KeySet([SigningKey.rsa("r1"), SigningKey.ec("e1")])
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    auth = JWTAuthenticator(AuthConfig(issuer=ISSUER, audiences=(AUDIENCE,), jwks_file=str(jwks)))
    await auth.refresh()
    auth.keys = keys  # type: ignore[attr-defined]
    return auth


async def test_valid_tokens_of_each_key_give_the_subject(authenticator: JWTAuthenticator) -> None:
    for key in authenticator.keys.keys:  # type: ignore[attr-defined]
        identity = await authenticator.authenticate(f"Bearer {key.token('alice')}")
        assert identity.user == "alice"


class FromNow(int):
    """A claim's time as seconds from when the test runs: parameters are built at collection, which
    can be minutes earlier (a parallel worker collects, then runs long files first), so a timestamp
    taken then could already have passed."""


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": FromNow(-10)}, "expired"),
        ({"iss": "https://someone.else"}, "invalid"),
        ({"aud": "another-service"}, "invalid"),
        ({"nbf": FromNow(600)}, "invalid"),
        ({"iat": FromNow(600)}, "invalid"),
        ({"sub": None}, "invalid"),
        ({"exp": None}, "invalid"),
    ],
)
async def test_claims_are_checked(authenticator: JWTAuthenticator, claims: dict, reason: str) -> None:
    key = authenticator.keys.keys[0]  # type: ignore[attr-defined]
    now = int(time.time())
    claims = {name: now + v if isinstance(v, FromNow) else v for name, v in claims.items()}
    with pytest.raises(AuthError) as caught:
        await authenticator.authenticate(f"Bearer {key.token(**claims)}")
    assert caught.value.reason == reason


async def test_iat_within_a_minute_ahead_is_accepted(authenticator: JWTAuthenticator) -> None:
    key = authenticator.keys.keys[0]  # type: ignore[attr-defined]
    assert (
        await authenticator.authenticate(f"Bearer {key.token(iat=int(time.time()) + 30)}")
    ).user == "alice"


async def test_a_foreign_key_or_a_forged_algorithm_is_refused(authenticator: JWTAuthenticator) -> None:
    stranger = SigningKey.rsa("r1")  # same kid, different key
    with pytest.raises(AuthError, match="Signature"):
        await authenticator.authenticate(f"Bearer {stranger.token()}")
    import jwt

    public_pem = authenticator.keys.keys[0].jwk()["n"]  # type: ignore[attr-defined]
    forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
                        public_pem, algorithm="HS256", headers={"kid": "r1"})  # fmt: skip
    with pytest.raises(AuthError):
        await authenticator.authenticate(f"Bearer {forged}")
    with pytest.raises(AuthError) as unknown:
        await authenticator.authenticate(f"Bearer {SigningKey.rsa('nope').token()}")
    assert unknown.value.reason == "unknown_key"


def test_keys_of_skips_symmetric_keys_and_needs_one_usable() -> None:
    with pytest.raises(ValueError, match="usable"):
        keys_of({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]})
    with pytest.raises(ValueError, match="keys"):
        keys_of({"nope": 1})
