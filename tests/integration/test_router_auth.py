"""JWT authentication (spec §9) on a real router process, with the official ``openai`` client: the
JWKS comes from a URL (a loopback server standing in for the identity provider) or from a file (a
mounted Secret); bad tokens get an OpenAI-style 401; a rotated key is picked up without a restart."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any

import openai
import pytest
from ferry_local.readiness import free_port

from tests.support.loopback import serve
from tests.support.router_world import (
    CHAT,
    RouterProcess,
    World,
    model_route,
    model_server,
    ns,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _jwt_keys() -> ModuleType:
    """The router unit tests' key helper (one test issuer for unit and integration tests)."""
    path = Path(__file__).resolve().parents[2] / "services" / "router" / "tests" / "jwt_keys.py"
    spec = importlib.util.spec_from_file_location("ferry_test_jwt_keys", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


keys = _jwt_keys()


@pytest.fixture
def issuer() -> Iterator[tuple[str, Any]]:
    """A JWKS endpoint on loopback (its own thread: the test blocks its loop while a router starts)
    serving the key set it yields (mutable: rotate by appending)."""
    key_set = keys.KeySet([keys.SigningKey.rsa("k1")])

    class JWKS(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(key_set.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    with serve(JWKS) as (_, url):
        yield f"{url}/jwks.json", key_set


async def routed_model(bus: World, router: RouterProcess) -> str:
    namespace = ns()
    engine = bus.engine("auth", "m", free_port())
    engine.wait_up()
    await bus.publish(
        "modelservers", model_server(namespace, "srv", {"app": namespace}, engine.port, model="m")
    )
    model = f"auth-{namespace}"
    rules = [{"targetModels": [{"modelServerName": "srv"}]}]
    await bus.publish("modelroutes", model_route(namespace, "route", {"modelName": model, "rules": rules}))
    await bus.pod(namespace, "pod-0", {"app": namespace}, engine.host)
    router.wait_endpoints(namespace, "srv", 1)
    return model


def client(router: RouterProcess, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{router.url}/v1", api_key=token, max_retries=0, timeout=30)


def auth_router(bus: World, tmp: Path, name: str, **auth: Any) -> RouterProcess:
    config = tmp / f"{name}.yaml"
    config.write_text(json.dumps({"auth": {"issuer": keys.ISSUER, "audiences": [keys.AUDIENCE], **auth}}))
    return bus.router(name=name, env={"FERRY_ROUTER_CONFIG": str(config)})


async def test_tokens_from_a_jwks_url_and_a_rotated_key(
    bus: World, issuer: tuple[str, Any], tmp_path: Path
) -> None:
    url, key_set = issuer
    router = auth_router(bus, tmp_path, "router-jwt-url", jwksUri=url)
    model = await routed_model(bus, router)
    good = key_set.keys[0].token("alice")
    answer = await client(router, good).chat.completions.create(model=model, messages=CHAT, max_tokens=3)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    assert model in {m.id async for m in client(router, good).models.list()}

    for bad in ("not-a-jwt", keys.SigningKey.rsa("k1").token(), key_set.keys[0].token(aud="someone-else")):
        with pytest.raises(openai.AuthenticationError) as refused:
            await client(router, bad).chat.completions.create(model=model, messages=CHAT)  # type: ignore[arg-type]
        body = refused.value.body
        assert isinstance(body, dict)
        assert body["code"] == "invalid_api_key"
        assert body["message"].startswith("Unauthorized: ")

    # the issuer rotates to a new key: a token naming it is accepted at once (unknown kid → refresh)
    key_set.keys.append(keys.SigningKey.ec("k2"))
    rotated = key_set.keys[1].token("bob")
    answer = await client(router, rotated).chat.completions.create(model=model, messages=CHAT, max_tokens=3)  # type: ignore[arg-type]
    assert answer.choices[0].message.content

    def logged() -> bool:
        users = set(re.findall(r'"user":"(\w+)"', router.access_log.read_text()))
        return {"alice", "bob"} <= users

    await asyncio.to_thread(wait_until, logged, "both users in the access log")
    failures = re.findall(r'ferry_router_auth_failures_total\{reason="(\w+)"\} (\d+)', router.metrics())
    assert {reason for reason, count in failures if float(count) > 0} >= {"malformed", "invalid"}


async def test_tokens_checked_against_a_jwks_file_from_a_secret(bus: World, tmp_path: Path) -> None:
    key = keys.SigningKey.rsa("file-key")
    jwks = tmp_path / "jwks.json"  # where a Secret volume would put it
    jwks.write_text(json.dumps(keys.KeySet([key]).jwks()))
    router = auth_router(bus, tmp_path, "router-jwt-file", jwksFile=str(jwks))
    model = await routed_model(bus, router)
    answer = await client(router, key.token("carol")).completions.create(
        model=model, prompt="hi", max_tokens=2
    )
    assert answer.choices[0].text
    with pytest.raises(openai.AuthenticationError, match="expired"):
        await client(router, key.token("carol", exp=0)).completions.create(model=model, prompt="hi")
    # no Authorization header at all (the openai client always sends one)
    request = urllib.request.Request(
        f"{router.url}/v1/completions", json.dumps({"model": model, "prompt": "hi"}).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
    assert missing.value.code == 401
    assert missing.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        json.loads(missing.value.read())["error"]["message"] == "Unauthorized: Authorization header missing"
    )
