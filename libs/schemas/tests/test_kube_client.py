"""The API client reads the proxy environment once, not per request (unit: no server needed)."""

import pytest
from ferry_schemas.runtime.kube import environment_read_once
from kubernetes_asyncio import client


def api_for(host: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = host
    return client.ApiClient(configuration)


async def test_session_stops_reading_the_environment_and_keeps_its_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    api = api_for("https://127.0.0.1:6443")
    connector = api.rest_client.pool_manager.connector
    environment_read_once(api)
    session = api.rest_client.pool_manager
    assert session.trust_env is False
    assert session.connector is connector
    assert api.rest_client.proxy is None
    await api.close()
    assert connector.closed


async def test_proxy_from_the_environment_is_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    proxied = environment_read_once(api_for("https://api.example:6443"))
    assert proxied.rest_client.proxy == "http://proxy.example:3128"
    assert proxied.rest_client.proxy_headers["Proxy-Authorization"].startswith("Basic ")
    bypassed = environment_read_once(api_for("https://10.0.0.1:6443"))
    assert bypassed.rest_client.proxy is None
    await proxied.close()
    await bypassed.close()
