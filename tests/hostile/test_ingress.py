"""The local ingress (scripts/services.sh's nginx, the same routing as deploy/k8s) in front of a real
service: what nginx answers itself (a body over its limit, a malformed request, headers or a request
line too long, a service that is down, no such route) is JSON in the API's error shape, like every
other answer, and the services' own answers pass through untouched."""
import os
import socket
import subprocess
import time

import pytest
import requests

from tests.conftest import free_port
from tests.hostile.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def ingress(start_service, tmp_path):
    """nginx on a free port; enterprises (a real service) behind it; the other services' ports closed."""
    _, client = start_service("enterprises")
    service_port = int(client.base.rsplit(":", 1)[1])
    port = free_port()
    (tmp_path / "env").write_text("")
    env = dict(os.environ, IPV_VAR=str(tmp_path), PORT=str(port), IPV_SERVICE_PORT_BASE=str(service_port - 1),
               PATH=os.environ["PATH"] + ":/usr/sbin")
    started = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "ingress"], env=env,
                             capture_output=True, text=True, timeout=30)
    assert started.returncode == 0, started.stderr
    yield f"http://127.0.0.1:{port}", port, client
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "stop"], env=env, capture_output=True, timeout=30)


def raw_request(port, data):
    """Sends bytes no HTTP library would send; returns (status, headers text, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin-1"), body


def json_error(status, headers, body, code):
    assert "content-type: application/json" in headers.lower(), headers
    import json
    answer = json.loads(body)
    assert answer["error"] == code and answer["message"], answer
    return answer


def test_what_the_ingress_answers_itself_is_json_in_the_error_shape(ingress):
    base, port, _ = ingress
    too_big = requests.post(base + "/api/v1/enterprises", data=b"{" + b" " * 10_000_000 + b"}",
                            headers={"Content-Type": "application/json"}, timeout=30)
    assert too_big.status_code == 413
    json_error(413, f"content-type: {too_big.headers['Content-Type']}", too_big.content, "payload_too_large")

    cases = [
        (b"GET /api/v1/enterprises/%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_request"),
        (b"GET /api/v1/\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_request"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "invalid_request"),
        (b"GET /api/v1/enterprises HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "invalid_request"),
        (b"GET /api/v1/enterprises?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET /api/v1/enterprises HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 9000 + b"\r\n\r\n", 431,
         "headers_too_large"),
        # (every path outside /api/ is the portal's: its own pages answer there)
        (b"GET /api/nothing/here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "not_found"),
        (b"GET /_ingress_error/500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "not_found"),
    ]
    for request, status, code in cases:
        got, headers, body = raw_request(port, request)
        assert got == status, (request[:60], got, body[:200])
        json_error(got, headers, body, code)

    down = requests.get(base + "/api/v1/agencies", timeout=10)    # providers is not running
    assert down.status_code == 502 and down.headers["Retry-After"] == "1"
    json_error(502, f"content-type: {down.headers['Content-Type']}", down.content, "unavailable")


def test_the_services_own_answers_pass_through_the_ingress_untouched(ingress):
    base, _, client = ingress
    for method, path, kwargs, status, code in [
        ("GET", "/api/v1/enterprises/91350100M000100Y43", {}, 401, "unauthorized"),
        ("POST", "/api/v1/enterprises", {"data": b"[" * 10_000, "headers": {"Content-Type": "application/json"}},
         400, "invalid_request"),
        ("POST", "/api/v1/enterprises", {"data": b"{}", "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ("POST", "/api/v1/enterprises", {"data": b"{" + b" " * 100_000 + b"}",
                                         "headers": {"Content-Type": "application/json"}}, 413, "payload_too_large"),
    ]:
        headers = dict(kwargs.pop("headers", {}), **client.token("officer", "o1")) if method == "POST" else {}
        through = requests.request(method, base + path, headers=headers, timeout=10, **kwargs)
        direct = requests.request(method, client.base + path, headers=headers, timeout=10, **kwargs)
        assert through.status_code == direct.status_code == status, through.text
        assert through.json()["error"] == code and through.json()["message"] == direct.json()["message"]
