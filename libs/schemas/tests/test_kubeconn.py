"""The lean API connection: kubeconfig reading and proxy resolution (unit: no server needed).

Requests against a real API server are exercised by the watcher's integration tests.
"""

import base64
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_schemas.runtime import kubeconn
from ferry_schemas.runtime.kubeconn import ConfigError


def write_kubeconfig(tmp_path: Path, user: dict[str, Any], server: str = "http://127.0.0.1:8080") -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "ctx",
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_token_and_token_file_are_sent_as_bearer(tmp_path: Path) -> None:
    conn = await kubeconn.connect(str(write_kubeconfig(tmp_path, {"token": "abc"})))
    assert conn.host == "http://127.0.0.1:8080"
    assert conn._token is not None
    assert conn._token.current() == "abc"
    await conn.close()
    (tmp_path / "tok").write_text("from-file\n")
    conn = kubeconn.from_kubeconfig(write_kubeconfig(tmp_path, {"tokenFile": "tok"}))  # relative to the file
    assert conn._token is not None
    assert conn._token.current() == "from-file"
    await conn.close()


async def test_exec_credentials_and_missing_context_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exec/auth-provider"):
        kubeconn.from_kubeconfig(write_kubeconfig(tmp_path, {"exec": {"command": "x"}}))
    bad = tmp_path / "bad"
    bad.write_text(yaml.safe_dump({"current-context": "nope", "contexts": []}))
    with pytest.raises(ConfigError, match="no context named 'nope'"):
        kubeconn.from_kubeconfig(bad)


async def test_unreadable_certificate_data_is_an_error(tmp_path: Path) -> None:
    user = {"client-certificate-data": base64.b64encode(b"not a cert").decode(), "client-key-data": "eA=="}
    with pytest.raises(ssl.SSLError):  # the key pair cannot be loaded
        kubeconn.from_kubeconfig(write_kubeconfig(tmp_path, user, server="https://127.0.0.1:6443"))


async def test_proxy_from_the_environment_is_resolved_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://user:secret@proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    proxied = kubeconn.from_kubeconfig(write_kubeconfig(tmp_path, {}, server="http://api.example:6443"))
    assert proxied._proxy == "http://proxy.example:3128"
    assert proxied._proxy_headers is not None
    assert proxied._proxy_headers["Proxy-Authorization"].startswith("Basic ")
    assert proxied.session.trust_env is False
    assert proxied._pool is None  # behind a proxy every request goes through aiohttp
    bypassed = kubeconn.from_kubeconfig(write_kubeconfig(tmp_path, {}, server="http://10.0.0.1:6443"))
    assert bypassed._proxy is None
    assert bypassed._pool is not None
    await proxied.close()
    await bypassed.close()


async def test_a_new_host_takes_every_later_request_and_its_proxy_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setting ``host`` (tests point a connection at an unreachable server and back) moves the lean pool."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    conn = kubeconn.from_kubeconfig(write_kubeconfig(tmp_path, {}, server="http://10.0.0.1:6443"))
    assert conn._pool is not None
    assert conn._host_header.startswith("Host: 10.0.0.1:6443\r\n")
    first = conn._pool
    conn.host = "http://10.0.0.1:9/"
    assert conn.host == "http://10.0.0.1:9"
    assert conn._pool is not None
    assert conn._pool is not first
    assert conn._host_header.startswith("Host: 10.0.0.1:9\r\n")
    conn.host = "http://api.example:6443"  # behind the proxy now: streams and requests on aiohttp
    assert (conn._pool, conn._proxy) == (None, "http://proxy.example:3128")
    await conn.close()


def test_the_lean_connection_does_not_import_the_generated_client() -> None:
    import subprocess

    probe = "import ferry_schemas.runtime.kubeconn, sys; print('kubernetes_asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


async def test_in_cluster_uses_the_service_account_and_rereads_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import certifi

    shutil.copyfile(certifi.where(), tmp_path / "ca.crt")
    (tmp_path / "token").write_text("first\n")
    monkeypatch.setattr(kubeconn, "SERVICE_ACCOUNT", tmp_path)
    monkeypatch.setattr(kubeconn, "TOKEN_REREAD_SECONDS", 0.0)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    conn = await kubeconn.connect()
    assert conn.host == "https://[fd00::1]:443"
    assert conn._token is not None
    assert conn._token.current() == "first"
    (tmp_path / "token").write_text("rotated\n")  # the kubelet rotates a projected token
    assert conn._token.current() == "rotated"
    await conn.close()
