"""The providers service over HTTP: real HTTP, real RabbitMQ, real FerretDB."""
import pytest
import requests
from openapi_spec_validator import validate as validate_openapi

from services.providers.service import ProvidersService

pytestmark = pytest.mark.integration

AG1, AG2, AG3 = "91350102MA2XYW001E", "91350102MA2XYW002H", "91310115MA1K3YJ20B"
RELATED = "91350100M000100Y43"
AGENCY = {"credit_code": AG1, "name": "福州闽江专利代理事务所", "kind": "patent", "licence_no": "35102",
          "region": "350102", "service_codes": ["PAT-01", "PAT-03"],
          "contact": {"person": "林工", "phone": "0591-87654321", "email": "ip@example.cn"},
          "related_credit_codes": [RELATED]}
CLEAN = {"period_from": "2025-01-01", "period_to": "2025-12-31"}


def evaluation(points, period_to="2025-12-31", **extra):
    deductions = [{"indicator": "abnormal_filings", "points": points, "note": "通报"}] if points else []
    return dict({"period_from": period_to[:4] + "-01-01", "period_to": period_to, "deductions": deductions}, **extra)


@pytest.fixture
def api(container_factory, service_config, token):
    container = container_factory(ProvidersService, service_config)
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


def register(api, body=AGENCY, **kw):
    response = api("POST", "/api/v1/agencies", json=body, **kw)
    assert response.status_code == 201, response.text
    return response.json()


def test_register_publishes_what_the_vouchers_service_needs(api, event_tap):
    tap = event_tap("providers", "provider.#")
    agency = register(api)
    assert agency["agency_id"] == AG1 and agency["status"] == "active" and agency["level"] is None
    assert agency["eligible"] is True and agency["eligibility_line"] == "B"
    event = tap.next()
    assert event["type"] == "provider.registered" and event["aggregate_id"] == AG1 and event["sequence"] == 1
    assert event["data"]["service_codes"] == ["PAT-01", "PAT-03"] and event["data"]["related_credit_codes"] == [RELATED]
    assert event["data"]["eligible"] is True and event["data"]["level"] is None
    again = api("POST", "/api/v1/agencies", json=dict(AGENCY, name="另一家"))
    assert again.status_code == 409 and again.json()["fields"] == {"credit_code": ["already registered"]}


def test_an_agency_registers_itself_and_sees_and_changes_only_its_own_record(api, event_tap):
    register(api, role="agency", subject=AG1)
    other = dict(AGENCY, credit_code=AG2)
    assert api("POST", "/api/v1/agencies", json=other, role="agency", subject=AG1).status_code == 403
    register(api, other)
    tap = event_tap("providers", "provider.profile_changed")
    changed = api("PATCH", f"/api/v1/agencies/{AG1}", json={"service_codes": ["PAT-01", "TM-01"], "kind": "both"},
                  role="agency", subject=AG1)
    assert changed.status_code == 200 and changed.json()["service_codes"] == ["PAT-01", "TM-01"]
    event = tap.next()
    assert event["sequence"] == 2 and event["data"]["kind"] == "both" and event["data"]["name"] == AGENCY["name"]
    for method, path, body in (("GET", f"/api/v1/agencies/{AG2}", None),
                               ("PATCH", f"/api/v1/agencies/{AG2}", {"name": "改名"}),
                               ("GET", f"/api/v1/agencies/{AG2}/rating", None),
                               ("GET", f"/api/v1/agencies/{AG2}/evaluations", None)):
        refused = api(method, path, role="agency", subject=AG1, json=body)
        assert refused.status_code == 403, path
        assert refused.json()["error"] == "forbidden"
    assert api("GET", f"/api/v1/agencies/{AG1}/evaluations", role="agency", subject=AG1).status_code == 200


@pytest.mark.parametrize("role,method,path,body", [
    ("enterprise", "POST", "/api/v1/agencies", AGENCY),
    ("auditor", "POST", "/api/v1/agencies", AGENCY),
    ("agency", "GET", "/api/v1/agencies", None),
    ("agency", "GET", "/api/v1/recommendations?service_code=PAT-01", None),
    ("agency", "POST", f"/api/v1/agencies/{AG1}/suspend", {"reason": "x"}),
    ("auditor", "POST", f"/api/v1/agencies/{AG1}/cancel", {"reason": "x"}),
    ("agency", "POST", f"/api/v1/agencies/{AG1}/evaluations", CLEAN),
    ("auditor", "POST", f"/api/v1/agencies/{AG1}/evaluations", CLEAN),
    ("enterprise", "GET", f"/api/v1/agencies/{AG1}/evaluations", None),
    ("agency", "POST", f"/api/v1/agencies/{AG1}/blacklist/lift", {"reason": "x"}),
    ("ops", "GET", f"/api/v1/agencies/{AG1}/rating", None),
])
def test_wrong_role_is_403(api, role, method, path, body):
    response = api(method, path, role=role, subject=AG1, json=body)
    assert response.status_code == 403, response.text
    assert "role" in response.json()["message"]


def test_no_token_is_401_and_unknown_agency_is_404(api):
    assert api("GET", "/api/v1/agencies", role=None).status_code == 401
    assert api("GET", f"/api/v1/agencies/{AG3}").status_code == 404
    assert api("POST", f"/api/v1/agencies/{AG3}/evaluations", json=CLEAN).status_code == 404


@pytest.mark.parametrize("change,field", [
    ({"credit_code": "91350102MA2XYW001F"}, "credit_code"),      # wrong check character
    ({"kind": "copyright"}, "kind"),
    ({"service_codes": []}, "service_codes"),
    ({"service_codes": ["pat01"]}, "service_codes"),
    ({"service_codes": ["PAT-01", "PAT-01"]}, "service_codes"),
    ({"region": "3501"}, "region"),
    ({"contact": {"person": "林工"}}, "contact"),
    ({"contact": {"person": "林工", "phone": "0591-1", "email": "not-mail"}}, "contact"),
    ({"related_credit_codes": ["123"]}, "related_credit_codes"),
    ({"name": "   "}, "name"),
    ({"licence_no": None}, "licence_no"),
    ({"extra": 1}, "extra"),
])
def test_malformed_registration_names_the_field(api, change, field):
    response = api("POST", "/api/v1/agencies", json=dict(AGENCY, **change))
    assert response.status_code == 400, response.text
    assert field in response.json()["fields"]


def test_status_machine_and_its_events(api, event_tap):
    register(api)
    tap = event_tap("providers", "provider.status_changed")
    suspended = api("POST", f"/api/v1/agencies/{AG1}/suspend", json={"reason": "年检未通过"})
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert suspended.json()["eligible"] is False
    event = tap.next()
    assert (event["data"]["old_status"], event["data"]["new_status"], event["data"]["eligible"]) == \
        ("active", "suspended", False)
    again = api("POST", f"/api/v1/agencies/{AG1}/suspend", json={"reason": "again"})
    assert again.status_code == 409 and again.json()["state"] == "suspended"
    assert api("POST", f"/api/v1/agencies/{AG1}/reinstate", json={"reason": "整改完成"}).json()["eligible"] is True
    assert api("POST", f"/api/v1/agencies/{AG1}/cancel", json={"reason": "注销"}).json()["status"] == "cancelled"
    for path, body in ((f"/api/v1/agencies/{AG1}/reinstate", {"reason": "x"}),
                       (f"/api/v1/agencies/{AG1}/evaluations", CLEAN)):
        refused = api("POST", path, json=body)
        assert refused.status_code == 409 and refused.json()["state"] == "cancelled", path
    assert api("PATCH", f"/api/v1/agencies/{AG1}", json={"name": "x"}).status_code == 409
    assert api("POST", f"/api/v1/agencies/{AG1}/suspend", json={}).json()["fields"] == {
        "reason": ["Missing data for required field."]}


def test_evaluations_are_all_kept_and_the_rating_explains_itself(api, event_tap):
    register(api)
    tap = event_tap("providers", "provider.rating_changed")
    first = api("POST", f"/api/v1/agencies/{AG1}/evaluations", json=evaluation(5, bonuses=[{"indicator": "honour"}]))
    assert first.status_code == 201, first.text
    assert (first.json()["score"], first.json()["level"], first.json()["current"]) == (98, "A", True)
    second = api("POST", f"/api/v1/agencies/{AG1}/evaluations", json=evaluation(0, deductions=[
        {"indicator": "abnormal_filings", "points": 15}, {"indicator": "administrative_penalty", "count": 1}]))
    assert (second.json()["score"], second.json()["level"]) == (75, "C")

    events = [tap.next(), tap.next()]
    assert [(e["data"]["old_level"], e["data"]["new_level"], e["data"]["score"]) for e in events] == \
        [(None, "A", 98), ("A", "C", 75)]
    assert (events[1]["data"]["was_eligible"], events[1]["data"]["eligible"]) == (True, False)
    assert events[1]["data"]["eligibility_line"] == "B" and events[1]["sequence"] == 3

    history = api("GET", f"/api/v1/agencies/{AG1}/evaluations", role="auditor", subject="a1").json()["items"]
    assert [(e["score"], e["current"]) for e in history] == [(75, True), (98, False)]
    rating = api("GET", f"/api/v1/agencies/{AG1}/rating", role="enterprise", subject=RELATED).json()
    assert (rating["level"], rating["score"], rating["eligible"]) == ("C", 75, False)
    assert rating["explanation"][0] == "rules 国知发运字〔2023〕10号: base 100 points"
    assert rating["explanation"][1].startswith("-15 abnormal_filings")
    assert rating["explanation"][2].endswith("[assumed indicator]")
    assert rating["explanation"][-1].startswith("= 75 points: level C")
    assert rating["service_record"]["orders"] == 0

    backfill = api("POST", f"/api/v1/agencies/{AG1}/evaluations", json=evaluation(0, period_to="2024-12-31"))
    assert backfill.status_code == 201 and backfill.json()["current"] is False
    assert tap.drain(1) == []                        # an earlier period changes no standing
    assert api("GET", f"/api/v1/agencies/{AG1}").json()["level"] == "C"
    assert len(api("GET", f"/api/v1/agencies/{AG1}/evaluations").json()["items"]) == 3


@pytest.mark.parametrize("body,status,where", [
    (evaluation(41), 422, "indicator_cap"),
    (evaluation(0, period_to="2023-04-30"), 422, "rating_rules_period"),
    (evaluation(0, period_to="2999-12-31"), 422, "period_not_over"),
    (evaluation(0, deductions=[{"indicator": "licence_revoked", "points": 3}]), 422, "fixed_points"),
    (evaluation(0, deductions=[{"indicator": "bad_luck"}]), 400, "deductions"),
    (evaluation(0, bonuses=[{"indicator": "licence_revoked"}]), 400, "bonuses"),
    (evaluation(0, deductions=[{"indicator": "licence_revoked"}, {"indicator": "licence_revoked"}]), 400,
     "deductions"),
    (evaluation(0, deductions=[{"indicator": "irregular_practice", "count": 0}]), 400, "deductions"),
    (dict(CLEAN, period_from="2026-01-01"), 400, "period_to"),
    ({"period_to": "2025-12-31"}, 400, "period_from"),
])
def test_bad_evaluations_are_refused_with_the_field_or_rule(api, body, status, where):
    register(api)
    response = api("POST", f"/api/v1/agencies/{AG1}/evaluations", json=body)
    assert response.status_code == status, response.text
    assert (response.json()["rule"] == where) if status == 422 else (where in response.json()["fields"])


def test_blacklisting_and_lifting(api, event_tap):
    register(api)
    tap, lift_tap = event_tap("providers", "provider.blacklisted"), event_tap("providers", "provider.blacklist_lifted")
    listing = {"list_type": "severe_dishonesty", "reason": "以欺骗手段取得执业许可", "source": "国家知识产权局",
               "listed_from": "2026-01-05", "listed_to": None}
    listed = api("POST", f"/api/v1/agencies/{AG1}/blacklist", json=listing)
    assert listed.status_code == 200 and listed.json()["eligible"] is False
    assert listed.json()["blacklist"]["reason"] == listing["reason"]
    event = tap.next()
    assert event["type"] == "provider.blacklisted" and event["data"]["eligible"] is False
    assert str(event["data"]["listed_from"]) == "2026-01-05" and event["data"]["listed_to"] is None
    again = api("POST", f"/api/v1/agencies/{AG1}/blacklist", json=listing)
    assert again.status_code == 409 and again.json()["state"] == "blacklisted"
    assert api("GET", "/api/v1/agencies?blacklisted=true").json()["items"][0]["agency_id"] == AG1

    lifted = api("POST", f"/api/v1/agencies/{AG1}/blacklist/lift", json={"reason": "信用修复", "lifted_on": "2026-07-05"})
    assert lifted.status_code == 200 and lifted.json()["blacklist"] is None and lifted.json()["eligible"] is True
    event = lift_tap.next()
    assert event["type"] == "provider.blacklist_lifted" and event["data"]["eligible"] is True
    assert api("POST", f"/api/v1/agencies/{AG1}/blacklist/lift", json={"reason": "x"}).status_code == 409
    future = api("POST", f"/api/v1/agencies/{AG1}/blacklist", json=dict(listing, listed_from="2999-01-01"))
    assert future.status_code == 422 and future.json()["rule"] == "listing_in_future"
    backwards = api("POST", f"/api/v1/agencies/{AG1}/blacklist", json=dict(listing, listed_to="2025-01-01"))
    assert backwards.status_code == 400 and "listed_to" in backwards.json()["fields"]


def test_recommendations_rank_eligible_agencies_and_leave_out_the_rest(api):
    register(api)                                                              # A 95
    register(api, dict(AGENCY, credit_code=AG2, name="闽都知识产权"))            # A 98
    register(api, dict(AGENCY, credit_code=AG3, name="浦东专利", region="310115"))  # unrated, Shanghai
    other = dict(AGENCY, credit_code="91440300MA5F00001A", name="深圳代理", region="440300")
    register(api, other)
    for agency_id, points in ((AG1, 5), (AG2, 2), ("91440300MA5F00001A", 25)):
        api("POST", f"/api/v1/agencies/{agency_id}/evaluations", json=evaluation(points))
    found = api("GET", "/api/v1/recommendations?service_code=PAT-01", role="enterprise", subject=RELATED).json()
    assert [i["agency_id"] for i in found["items"]] == [AG2, AG1, AG3]           # the C agency is below the line
    assert found["items"][1]["reason"].startswith("#2: same level as #1, lower score (95 < 98)")
    assert "not yet rated" in found["items"][2]["reason"]
    fujian = api("GET", "/api/v1/recommendations?service_code=PAT-01&region=35").json()["items"]
    assert [i["agency_id"] for i in fujian] == [AG2, AG1]

    api("POST", f"/api/v1/agencies/{AG2}/blacklist", json={
        "list_type": "abnormal_operation", "reason": "列入经营异常名录", "source": "市场监管总局", "listed_from": "2026-01-05"})
    api("POST", f"/api/v1/agencies/{AG1}/suspend", json={"reason": "停业整顿"})
    left = api("GET", "/api/v1/recommendations?service_code=PAT-01&region=3501").json()["items"]
    assert left == []
    assert api("GET", "/api/v1/recommendations?service_code=TM-09").json()["items"] == []
    assert api("GET", "/api/v1/recommendations").json()["fields"] == {"service_code": ["Missing data for required field."]}


def test_list_filters_and_paging(api):
    register(api)
    register(api, dict(AGENCY, credit_code=AG2, name="闽都商标事务所", kind="trademark", service_codes=["TM-01"]))
    register(api, dict(AGENCY, credit_code=AG3, name="浦东专利", region="310115"))
    api("POST", f"/api/v1/agencies/{AG3}/evaluations", json=evaluation(12))
    page1 = api("GET", "/api/v1/agencies?limit=2").json()
    page2 = api("GET", f"/api/v1/agencies?limit=2&after={page1['next_cursor']}").json()
    assert [a["agency_id"] for a in page1["items"] + page2["items"]] == sorted([AG1, AG2, AG3])
    assert page2["next_cursor"] is None

    def ids(query):
        response = api("GET", f"/api/v1/agencies?{query}", role="enterprise", subject=RELATED)
        assert response.status_code == 200, response.text
        return sorted(a["agency_id"] for a in response.json()["items"])
    assert ids("kind=trademark") == [AG2]
    assert ids("region=31") == [AG3] and ids("region=350102") == sorted([AG1, AG2])
    assert ids("service_code=PAT-03") == sorted([AG1, AG3])
    assert ids("level=B") == [AG3] and ids("level=unrated") == sorted([AG1, AG2])
    assert ids("q=商标") == [AG2] and ids("q=.*") == []
    assert api("GET", "/api/v1/agencies?level=E").status_code == 400
    assert api("GET", "/api/v1/agencies?region=3").status_code == 400


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


def test_agency_gauge_counts_levels_and_statuses(api):
    register(api)
    register(api, dict(AGENCY, credit_code=AG2))
    api("POST", f"/api/v1/agencies/{AG1}/evaluations", json=evaluation(15))
    api("POST", f"/api/v1/agencies/{AG2}/suspend", json={"reason": "x"})
    metrics = api("GET", "/metrics", role=None).text
    assert 'ipv_agencies{level="B",status="active"} 1.0' in metrics
    assert 'ipv_agencies{level="unrated",status="suspended"} 1.0' in metrics
    assert 'ipv_agencies{level="unrated",status="active"} 0.0' in metrics
