"""The enterprises service end to end: real HTTP, real RabbitMQ, real FerretDB."""
import uuid

import pytest
import requests
from openapi_spec_validator import validate as validate_openapi

from ipvkit.consumer import EventConsumer
from services.enterprises.service import EnterprisesService
from tests.conftest import eventually

pytestmark = pytest.mark.integration

CODE = "91350100M000100Y43"
OTHER = "91310115MA1K3YJ15R"
ENTERPRISE = {"credit_code": CODE, "name": "福州闽光精密制造有限公司", "region": "350102", "industry": "C34", "size": "small"}
QUALIFICATION = {"tier": "srdi_sme", "level": "provincial", "certificate_no": "闽专精特新〔2025〕0117",
                 "issuing_authority": "福建省工业和信息化厅", "valid_from": "2025-01-01", "valid_to": "2027-12-31"}


@pytest.fixture
def api(container_factory, service_config, token):
    container = container_factory(EnterprisesService, service_config)
    container.start()
    base = f"http://{service_config['WEB_SERVER_ADDRESS']}"

    class Client:
        container_ = container

        def __call__(self, method, path, role="officer", subject="o1", **kwargs):
            headers = kwargs.pop("headers", {})
            if role:
                headers.update(token(role, subject))
            return requests.request(method, base + path, headers=headers, timeout=10, **kwargs)
    return Client()


def register(api, body=ENTERPRISE, **kw):
    return api("POST", "/api/v1/enterprises", json=body, **kw)


def test_register_then_qualify_publishes_valid_events(api, event_tap):
    tap = event_tap("enterprises", "enterprise.#")
    created = register(api)
    assert created.status_code == 201, created.text
    assert created.json()["enterprise_id"] == CODE
    granted = api("POST", f"/api/v1/enterprises/{CODE}/qualifications", json=QUALIFICATION)
    assert granted.status_code == 201, granted.text
    qid = granted.json()["qualification_id"]

    registered, qualified = tap.next(), tap.next()
    assert registered["type"] == "enterprise.registered" and registered["aggregate_id"] == CODE
    assert registered["sequence"] == 1 and registered["producer"] == "enterprises"
    assert registered["actor"] == {"role": "officer", "id": "o1"}
    assert registered["data"]["name"] == ENTERPRISE["name"]
    assert qualified["type"] == "enterprise.qualification_granted" and qualified["aggregate_id"] == qid
    assert qualified["data"]["tier"] == "srdi_sme" and str(qualified["data"]["valid_to"]) == "2027-12-31"

    tiers = api("GET", f"/api/v1/enterprises/{CODE}/tiers?on=2027-12-31").json()
    assert tiers["tiers"] == ["srdi_sme"]
    assert api("GET", f"/api/v1/enterprises/{CODE}/tiers?on=2028-01-01").json()["tiers"] == []


def test_enterprise_registers_itself_and_reads_only_its_own(api):
    assert register(api, role="enterprise", subject=CODE).status_code == 201
    assert api("GET", f"/api/v1/enterprises/{CODE}", role="enterprise", subject=CODE).status_code == 200
    other = dict(ENTERPRISE, credit_code=OTHER)
    assert register(api, other, role="enterprise", subject=CODE).status_code == 403
    assert register(api, other).status_code == 201
    for path in (f"/api/v1/enterprises/{OTHER}", f"/api/v1/enterprises/{OTHER}/qualifications",
                 f"/api/v1/enterprises/{OTHER}/tiers", f"/api/v1/enterprises/{OTHER}/notifications"):
        refused = api("GET", path, role="enterprise", subject=CODE)
        assert refused.status_code == 403, path
        assert refused.json()["error"] == "forbidden"


@pytest.mark.parametrize("role,method,path,body", [
    ("agency", "POST", "/api/v1/enterprises", ENTERPRISE),
    ("enterprise", "GET", "/api/v1/enterprises", None),
    ("ops", "GET", f"/api/v1/enterprises/{CODE}", None),
    ("enterprise", "POST", f"/api/v1/enterprises/{CODE}/qualifications", QUALIFICATION),
    ("auditor", "POST", f"/api/v1/enterprises/{CODE}/qualifications", QUALIFICATION),
    ("auditor", "POST", "/api/v1/enterprises", ENTERPRISE),
])
def test_wrong_role_is_403(api, role, method, path, body):
    response = api(method, path, role=role, subject=CODE, json=body)
    assert response.status_code == 403, response.text
    assert "role" in response.json()["message"]


def test_no_or_bad_token_is_401(api):
    assert api("GET", "/api/v1/enterprises", role=None).status_code == 401
    bad = api("GET", "/api/v1/enterprises", role=None, headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"


def test_duplicate_registration_is_409(api):
    assert register(api).status_code == 201
    again = register(api, dict(ENTERPRISE, name="另一个名字"))
    assert again.status_code == 409
    assert again.json()["fields"] == {"credit_code": ["already registered"]}
    assert api("GET", f"/api/v1/enterprises/{CODE}").json()["name"] == ENTERPRISE["name"]


@pytest.mark.parametrize("change,field", [
    ({"credit_code": "91350100M000100Y44"}, "credit_code"),       # wrong check character
    ({"credit_code": "92350100M000100Y4?"}, "credit_code"),
    ({"credit_code": None}, "credit_code"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": 12}, "name"),
    ({"region": "99010"}, "region"),
    ({"region": "990100"}, "region"),                              # no such province
    ({"industry": "Z99"}, "industry"),
    ({"size": "large"}, "size"),                                    # unknown enum value
    ({"size": ["small"]}, "size"),
    ({"extra_field": 1}, "extra_field"),
])
def test_malformed_registration_names_the_field(api, change, field):
    body = dict(ENTERPRISE, **change)
    response = register(api, body)
    assert response.status_code == 400, response.text
    assert field in response.json()["fields"]


def test_missing_fields_and_non_json_bodies(api):
    missing = register(api, {"name": "x"})
    assert missing.status_code == 400
    assert set(missing.json()["fields"]) == {"credit_code", "region", "industry", "size"}
    assert api("POST", "/api/v1/enterprises", data="{oops", headers={"Content-Type": "application/json"}).status_code == 400
    assert api("POST", "/api/v1/enterprises", json=[ENTERPRISE]).status_code == 400
    huge = api("POST", "/api/v1/enterprises", data=b"{" + b" " * 70000 + b"}")
    assert huge.status_code == 413


def test_idempotency_key_replays_the_first_result(api, event_tap):
    tap = event_tap("enterprises", "enterprise.registered")
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = register(api, headers=dict(key))
    again = register(api, headers=dict(key))
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
    reused = register(api, dict(ENTERPRISE, credit_code=OTHER), headers=dict(key))
    assert reused.status_code == 422 and reused.json()["rule"] == "idempotency_key_reused"
    assert len(tap.take(1)) == 1  # one registration, one event


def test_a_refused_request_changed_nothing_so_its_key_can_be_retried_once_the_rule_passes(api):
    # A client retrying with the same key, e.g. while the record it needs is still being created.
    key = {"Idempotency-Key": uuid.uuid4().hex}
    path = f"/api/v1/enterprises/{CODE}/qualifications"
    assert api("POST", path, json=QUALIFICATION, headers=dict(key)).status_code == 404
    register(api)
    granted = api("POST", path, json=QUALIFICATION, headers=dict(key))
    assert granted.status_code == 201 and "Idempotent-Replayed" not in granted.headers
    again = api("POST", path, json=QUALIFICATION, headers=dict(key))
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == granted.json()


def test_qualification_rules_and_revocation(api, event_tap):
    register(api)
    refused = api("POST", f"/api/v1/enterprises/{CODE}/qualifications", json=dict(QUALIFICATION, tier="little_giant"))
    assert refused.status_code == 422 and refused.json()["rule"] == "tier_level"
    assert api("POST", f"/api/v1/enterprises/{OTHER}/qualifications", json=QUALIFICATION).status_code == 404
    qid = api("POST", f"/api/v1/enterprises/{CODE}/qualifications", json=QUALIFICATION).json()["qualification_id"]
    duplicate = api("POST", f"/api/v1/enterprises/{CODE}/qualifications", json=QUALIFICATION)
    assert duplicate.status_code == 409

    tap = event_tap("enterprises", "enterprise.qualification_revoked")
    path = f"/api/v1/enterprises/{CODE}/qualifications/{qid}/revoke"
    revoked = api("POST", path, json={"reason": "复核未通过", "revoked_on": "2026-03-10"})
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    event = tap.next()
    assert event["sequence"] == 2 and event["data"]["reason"] == "复核未通过"
    again = api("POST", path, json={"reason": "again"})
    assert again.status_code == 409 and again.json()["state"] == "revoked"
    assert api("GET", f"/api/v1/enterprises/{CODE}/tiers?on=2026-03-09").json()["tiers"] == ["srdi_sme"]
    assert api("GET", f"/api/v1/enterprises/{CODE}/tiers?on=2026-03-10").json()["tiers"] == []


def test_list_search_and_paging(api):
    codes = [CODE, OTHER]
    register(api)
    register(api, dict(ENTERPRISE, credit_code=OTHER, name="上海浦江知识产权科技有限公司", region="310115"))
    page1 = api("GET", "/api/v1/enterprises?limit=1").json()
    page2 = api("GET", f"/api/v1/enterprises?limit=1&after={page1['next_cursor']}").json()
    assert [e["enterprise_id"] for e in page1["items"] + page2["items"]] == sorted(codes)
    assert api("GET", "/api/v1/enterprises?q=浦江").json()["items"][0]["enterprise_id"] == OTHER
    assert api("GET", "/api/v1/enterprises?q=.*").json()["items"] == []   # user text is not a regex
    assert [e["region"] for e in api("GET", "/api/v1/enterprises?region=350102").json()["items"]] == ["350102"]
    assert api("GET", "/api/v1/enterprises?limit=100000").status_code == 400
    assert api("GET", "/api/v1/enterprises?size=giant").status_code == 400


def test_openapi_document_matches_the_real_routes(api):
    document = api("GET", "/api/v1/openapi.json", role=None).json()
    validate_openapi(document)
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    real = set()
    for ep in api.container_.entrypoints:
        url = getattr(ep, "url", None)
        if url and url.startswith("/api/v1/") and url != "/api/v1/openapi.json":
            real.add((url.replace("<", "{").replace(">", "}"), ep.method))
    assert documented == real


def test_health_readiness_and_metrics(api):
    assert api("GET", "/healthz", role=None).json() == {"status": "ok"}
    def readiness():
        answer = api("GET", "/readyz", role=None)
        return answer.status_code, answer.json()["checks"]
    # Ready once its event consumer is subscribed (the web server answers before that), not before.
    eventually("ready", lambda: readiness()[0] == 200)
    assert readiness() == (200, {"database": True, "broker": True, "events": True})
    (consumer,) = [ep for ep in api.container_.entrypoints if isinstance(ep, EventConsumer)]
    consumer.loop.on_connection_revived()          # as after a reconnect, before its queue is declared again
    assert readiness() == (503, {"database": True, "broker": True, "events": False})
    consumer.loop.on_consume_ready(None, None, [])
    assert readiness()[0] == 200
    register(api)
    metrics = api("GET", "/metrics", role=None).text
    assert 'ipv_http_request_duration_seconds_count{method="POST",route="/api/v1/enterprises",service="enterprises",status="201"}' in metrics
    assert 'ipv_events_published_total{outcome="published",service="enterprises",type="enterprise.registered"}' in metrics
