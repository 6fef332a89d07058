"""Generic HTTP guards in ipvkit.http that fuzzing showed were missing."""
import json
import logging
import socket

import pytest
import requests
from marshmallow import Schema, fields

from ipvkit.errors import Conflict
from ipvkit.http import ServiceBase, api

pytestmark = pytest.mark.integration


class Page(Schema):
    after = fields.Integer(load_default=0)


class Body(Schema):
    amounts = fields.List(fields.Integer(), required=True)


class Echo(ServiceBase):
    name = "echo_guard"

    @api("GET", "/things/<int:position>", roles=("auditor",), query=Page)
    def thing(self, call):
        return {"position": call.path["position"], "after": call.query["after"]}

    @api("POST", "/things", roles=("auditor",), body=Body)
    def add(self, call):
        if call.body["amounts"] == [0]:
            raise Conflict("zero is taken")
        if call.body["amounts"] == [13]:
            raise RuntimeError("a bug")
        return call.body


def test_integers_beyond_64_bits_are_a_400_naming_the_field_not_a_database_error(container_factory, service_config,
                                                                                  token):
    # A BSON int64 is the largest integer MongoDB stores or compares: a bigger one made a query fail (500).
    container = container_factory(Echo, service_config)
    container.start()
    base, auth = f"http://{service_config['WEB_SERVER_ADDRESS']}", token("auditor", "a1")
    big = str(2**63)
    assert requests.get(f"{base}/things/7?after={2**63 - 1}", headers=auth).json() == {
        "position": 7, "after": 2**63 - 1}
    for url, field in ((f"{base}/things/7?after=-{big}", "after"), (f"{base}/things/{big}", "position")):
        refused = requests.get(url, headers=auth)
        assert refused.status_code == 400 and list(refused.json()["fields"]) == [field], refused.text
    refused = requests.post(f"{base}/things", headers=auth, json={"amounts": [1, 2**64]})
    assert refused.status_code == 400 and refused.json()["fields"] == {"amounts.1": [f"must lie within ±{2**63 - 1} (64-bit)"]}


def test_a_path_or_method_no_route_takes_is_a_json_error_too(container_factory, service_config, token):
    container = container_factory(Echo, service_config)
    container.start()
    base, auth = f"http://{service_config['WEB_SERVER_ADDRESS']}", token("auditor", "a1")
    for response, status in ((requests.get(f"{base}/things/-1", headers=auth), 404),
                             (requests.get(f"{base}/nothing/here", headers=auth), 404),
                             (requests.delete(f"{base}/things", headers=auth), 405)):
        assert response.status_code == status and response.headers["Content-Type"] == "application/json"
        assert response.json()["error"] == {404: "not_found", 405: "method_not_allowed"}[status]
    assert "POST" in requests.delete(f"{base}/things", headers=auth).headers["Allow"]
    assert requests.get(f"{base}/healthz").json() == {"status": "ok"}     # ops routes share the server


def raw(address, data):
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin-1").lower(), body


def test_what_the_http_server_refuses_before_any_route_is_a_json_error_too(container_factory, service_config):
    container = container_factory(Echo, service_config)
    container.start()
    address = service_config["WEB_SERVER_ADDRESS"]
    for request, status, code in [
        (b"GET /things/1?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET /things/1 HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"GET /things/1 HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 9000 + b"\r\n", 431, "headers_too_large"),
        (b"POST /things HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "invalid_request"),
        (b"POST /things HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
         400, "invalid_request"),
        (b"GET /things/1 HTTP/7.0\r\nHost: x\r\n\r\n", 505, "invalid_request"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "invalid_request"),
        (b'GET /things/1 HTTP/1.1"<x>\r\n\r\n', 400, "invalid_request"),
    ]:
        got, head, body = raw(address, request)
        assert (got, "content-type: application/json" in head) == (status, True), (request[:50], got, head, body)
        assert json.loads(body)["error"] == code and json.loads(body)["message"]
    assert requests.get(f"http://{address}/healthz").json() == {"status": "ok"}    # still serving


def test_a_refusal_is_one_info_line_and_a_bug_an_error_with_its_traceback(container_factory, service_config, token,
                                                                          caplog):
    # Ops alert on ERROR lines: a 4xx is the client's mistake or a rule, answered in JSON, not a fault.
    container = container_factory(Echo, service_config)
    container.start()
    base, auth = f"http://{service_config['WEB_SERVER_ADDRESS']}", token("auditor", "a1")
    caplog.set_level(logging.INFO, logger="nameko.containers")
    assert requests.post(f"{base}/things", headers=auth, json={"amounts": [0]}).status_code == 409
    refusals = [r for r in caplog.records if r.name == "nameko.containers" and "zero is taken" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in refusals] == [("INFO", None)]
    caplog.clear()
    assert requests.post(f"{base}/things", headers=auth, json={"amounts": [13]}).status_code == 500
    bugs = [r for r in caplog.records if r.name == "nameko.containers" and "a bug" in r.getMessage()]
    assert [r.levelname for r in bugs] == ["ERROR"] and bugs[0].exc_info is not None
