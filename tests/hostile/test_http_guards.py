"""Generic HTTP guards in ipvkit.http that fuzzing showed were missing."""
import pytest
import requests
from marshmallow import Schema, fields

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
