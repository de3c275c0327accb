"""Certificates and the kubeconfig for the local API server (CA, serving cert, admin client cert, SA keys).

The admin is a client certificate in group ``system:masters``, as envtest does; every file is
created once per state directory with ``openssl`` and reused.
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Pki:
    ca_crt: Path
    ca_key: Path
    server_crt: Path
    server_key: Path
    admin_crt: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()}")


def _signed_cert(directory: Path, name: str, subject: str, extensions: str) -> None:
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "3650", "-extfile", ext.name, cwd=directory)  # fmt: skip


def ensure_pki(directory: Path, extra_sans: tuple[str, ...] = ()) -> Pki:
    """Create (once) a CA, the API server's serving cert, an admin client cert and SA signing keys.

    ``extra_sans`` are more DNS names for the serving cert (e.g. ``apiserver`` in docker compose).
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_crt=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_crt=directory / "apiserver.crt",
        server_key=directory / "apiserver.key",
        admin_crt=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    if all(p.exists() for p in (pki.ca_crt, pki.server_crt, pki.admin_crt, pki.sa_pub)):
        return pki
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=ferry-local-ca", cwd=directory)  # fmt: skip
    _signed_cert(
        directory,
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,IP:10.0.0.1"
        + "".join(f",DNS:{name}" for name in extra_sans)
        + "\nextendedKeyUsage=serverAuth\n",
    )
    _signed_cert(directory, "admin", "/O=system:masters/CN=ferry-admin", "extendedKeyUsage=clientAuth\n")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki, *, embed: bool = False) -> Path:
    """A kubeconfig for the admin user: absolute paths to the certificates, or (``embed``) their contents,
    for a kubeconfig read where the certificate files are elsewhere (the host of a compose stack)."""
    if embed:
        cluster: dict[str, str] = {"certificate-authority-data": _b64(pki.ca_crt)}
        user = {"client-certificate-data": _b64(pki.admin_crt), "client-key-data": _b64(pki.admin_key)}
    else:
        cluster = {"certificate-authority": str(pki.ca_crt)}
        user = {"client-certificate": str(pki.admin_crt), "client-key": str(pki.admin_key)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferry-local", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "ferry-admin", "user": user}],
        "contexts": [{"name": "ferry-local", "context": {"cluster": "ferry-local", "user": "ferry-admin"}}],
        "current-context": "ferry-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
