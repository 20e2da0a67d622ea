"""The URL schemes that reach one server another way than TCP in the clear, against a
real redis-server: ``unix://`` (a socket file) and ``rediss://`` (TLS, checked against
the test's own certificate authority). A node and a client run a tree through each."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from tests.helpers import RedisServer, free_port

pytestmark = pytest.mark.timeout(60)


def run_a_tree(url: str, nodes: Any) -> None:
    nodes("n1", url)
    client = Client(url)
    root = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "noop"}, {"kind": "noop"}]})
    assert client.wait(root, timeout=20)["state"] == "SUCCESS"
    assert [t["id"] for t in client.list().trees] == [root]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def certificates(folder: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it, in ``folder``."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=jobgrove-test-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=folder)
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "ext.cnf",
            cwd=folder)
    return folder


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[Any]:
    started: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = RedisServer(extra=extra)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def test_a_unix_socket(server_with: Any, tmp_path: Path, nodes: Any) -> None:
    sock = tmp_path / "redis.sock"
    server_with("--unixsocket", str(sock), "--unixsocketperm", "700")
    run_a_tree(f"unix://{sock}?db=0", nodes)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_with_the_servers_authority(server_with: Any, tmp_path: Path,
                                        nodes: Any) -> None:
    certs = certificates(tmp_path)
    port = free_port()
    server_with("--tls-port", str(port), "--tls-cert-file", str(certs / "server.pem"),
                "--tls-key-file", str(certs / "server.key"),
                "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no")
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.pem'}"
    run_a_tree(url, nodes)
    # Without the authority the certificate cannot be checked: refused, in one line.
    with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
        Client(f"rediss://127.0.0.1:{port}/0").store.ping()
