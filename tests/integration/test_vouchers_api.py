"""The vouchers service end to end: real HTTP, real RabbitMQ, real FerretDB, an injected clock.
The fixtures and helpers here are shared by the other test_vouchers_* modules."""
import uuid
from datetime import datetime, timezone

import pytest
import requests
from kombu import Connection
from nameko.testing.services import entrypoint_hook, replace_dependencies
from openapi_spec_validator import validate as validate_openapi

from ipvkit.amqp import consumer_queues
from ipvkit.clock import FixedClock
from ipvkit.events import new_event, parse
from services.vouchers.service import VouchersService
from tests.conftest import dumps, eventually

pytestmark = pytest.mark.integration

ENT = "91350100M000100Y43"
ENT2 = "91310115MA1K3YJ15R"
AGENCY_CODE = "91330100MA2H00001P"
RELATED = "91330100MA2H00002T"
NOW = datetime(2026, 6, 1, 2, 0, tzinfo=timezone.utc)
SHA = "ab" * 32
PROGRAMME = {
    "name": "玉环市知识产权服务券（2026）", "region": "331021", "fund_source": "中小企业发展专项资金",
    "budget_fen": 10_000_000, "opens_on": "2026-01-01", "closes_on": "2026-12-31", "validity_days": 180,
    "redemption_model": "agency_redeems",
    "tiers": [{"tier": "srdi_sme", "face_value_fen": 2_000_000, "annual_cap_fen": 10_000_000},
              {"tier": "innovative_sme", "face_value_fen": 1_000_000, "annual_cap_fen": 3_000_000}],
    "catalogue": [
        {"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000, "item_cap_fen": 1_000_000,
         "agency_kinds": ["patent"]},
        {"service_code": "PAT-02", "name": "专利申请代理", "subsidy_ratio_bp": 5000, "item_cap_fen": 500_000,
         "agency_kinds": ["patent"], "barred_reason": "国知局2021年通知：专利申请代理服务费不得资助"},
        {"service_code": "TM-01", "name": "商标注册代理", "subsidy_ratio_bp": 10000, "item_cap_fen": 200_000,
         "agency_kinds": ["trademark"]},
    ]}
EVIDENCE = {"contract_ref": "HT-2026-001", "invoice_no": "INV-0001", "payment_proof_ref": "BANK-77",
            "official_no": None, "deliverable_sha256": SHA}


def event(type_, aggregate_id, sequence, data, producer):
    return new_event(type=type_, producer=producer, aggregate_id=aggregate_id, sequence=sequence, data=data,
                     actor={"role": "officer", "id": "o9"}, now=NOW)


def qualification_granted(enterprise_id, tier="srdi_sme", valid_from="2025-01-01", valid_to="2027-12-31", qid=None):
    qid = qid or "q_" + uuid.uuid4().hex[:12]
    return event("enterprise.qualification_granted", qid, 1, {
        "qualification_id": qid, "enterprise_id": enterprise_id, "tier": tier, "level": "provincial",
        "certificate_no": qid, "issuing_authority": "省工信厅", "valid_from": valid_from, "valid_to": valid_to},
        "enterprises")


def agency_registered(agency_id="ag-1", **changes):
    data = {"agency_id": agency_id, "name": "玉环专利代理事务所", "credit_code": AGENCY_CODE, "kind": "patent",
            "region": "331021", "service_codes": ["PAT-01", "PAT-02"], "related_credit_codes": [RELATED],
            "eligibility_line": "B", "level": "A", "eligible": True}
    data.update(changes)
    return event("provider.registered", agency_id, 1, data, "providers")


def rating_changed(agency_id, sequence, new_level, eligible, old_level="A"):
    return event("provider.rating_changed", agency_id, sequence, {
        "agency_id": agency_id, "agency_name": "玉环专利代理事务所", "eligibility_line": "B", "eligible": eligible,
        "old_level": old_level, "new_level": new_level, "score": 72, "was_eligible": not eligible}, "providers")


class Client:
    def __init__(self, container, config, token, clock):
        self.container, self.base, self.token, self.clock = container, f"http://{config['WEB_SERVER_ADDRESS']}", token, clock
        self.session = requests.Session()

    def __call__(self, method, path, role="officer", subject="o1", **kwargs):
        headers = kwargs.pop("headers", {})
        if role:
            headers.update(self.token(role, subject))
        return self.session.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def feed(self, handler, *events):
        with entrypoint_hook(self.container, handler) as hook:
            for e in events:
                hook(parse(dumps(e)))  # what the consumer entrypoint hands the handler

    def programme(self, **changes):
        created = self("POST", "/api/v1/programmes", json=dict(PROGRAMME, **changes))
        assert created.status_code == 201, created.text
        pid = created.json()["programme_id"]
        assert self("POST", f"/api/v1/programmes/{pid}/open").status_code == 200
        return pid

    def voucher(self, pid, enterprise=ENT, **body):
        response = self("POST", "/api/v1/vouchers", "enterprise", enterprise, json=dict(body, programme_id=pid))
        assert response.status_code == 201, response.text
        return response.json()

    def order(self, vid, enterprise=ENT, agency="ag-1", price=1_000_000, code="PAT-01", deliver_by="2026-09-30", **kw):
        return self("POST", "/api/v1/orders", "enterprise", enterprise, json={
            "voucher_id": vid, "agency_id": agency, "service_code": code, "price_fen": price,
            "deliver_by": deliver_by}, **kw)

    def world(self, **programme):
        """An open programme, a qualified enterprise, an eligible patent agency."""
        self.feed("on_qualification", qualification_granted(ENT))
        self.feed("on_agency", agency_registered())
        return self.programme(**programme)


@pytest.fixture
def vapi(container_factory, service_config, token, amqp_uri):
    # The consumer queues are durable and shared by every test on this vhost: other tests' provider
    # and enterprise events (an "ag-1" downgrade, say) wait there and would reach this fresh database.
    with Connection(amqp_uri) as conn:
        for handler, bindings in (("on_agency", []), ("on_qualification", [])):
            for queue in consumer_queues(f"vouchers.{handler}", bindings)[:2]:
                queue(conn.default_channel).declare()
                queue(conn.default_channel).purge()
    clock = FixedClock(NOW)
    container = container_factory(VouchersService, service_config)
    replace_dependencies(container, clock=clock)
    container.start()
    return Client(container, service_config, token, clock)


def test_the_whole_life_of_a_voucher_publishes_every_step(vapi, event_tap):
    tap = event_tap("vouchers", "#")
    pid = vapi.world()
    voucher = vapi.voucher(pid)
    assert (voucher["tier"], voucher["face_value_fen"], voucher["free_fen"]) == ("srdi_sme", 2_000_000, 2_000_000)
    assert (voucher["valid_from"], voucher["valid_to"]) == ("2026-06-01", "2026-11-27")

    placed = vapi.order(voucher["voucher_id"], price=1_500_001)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert (order["subsidy_fen"], order["copay_fen"]) == (750_000, 750_001)   # 50 %, rounded down to the fen
    oid = order["order_id"]
    delivered = vapi("POST", f"/api/v1/orders/{oid}/deliver", "agency", "ag-1", json=EVIDENCE)
    assert delivered.status_code == 200, delivered.text
    assert vapi("POST", f"/api/v1/orders/{oid}/confirm", "enterprise", ENT).json()["state"] == "confirmed"
    claim = vapi("POST", "/api/v1/claims", "agency", "ag-1", json={"order_id": oid})
    assert claim.status_code == 201, claim.text
    assert (claim.json()["payee_role"], claim.json()["amount_fen"]) == ("agency", 750_000)
    cid = claim.json()["claim_id"]
    assert [c["claim_id"] for c in vapi("GET", "/api/v1/claims?state=submitted").json()["items"]] == [cid]
    assert vapi("POST", f"/api/v1/claims/{cid}/approve").json()["state"] == "approved"
    paid = vapi("POST", f"/api/v1/claims/{cid}/pay", json={"payment_ref": "国库集中支付-0042", "paid_on": "2026-06-20"})
    assert paid.json()["state"] == "paid" and paid.json()["paid_on"] == "2026-06-20"

    after = vapi("GET", f"/api/v1/vouchers/{voucher['voucher_id']}", "enterprise", ENT).json()
    assert (after["free_fen"], after["held_fen"], after["paid_fen"]) == (1_250_000, 0, 750_000)
    balance = vapi("GET", f"/api/v1/programmes/{pid}/balances", "auditor", "a1").json()
    assert balance == {"programme_id": pid, "budget_fen": 10_000_000, "remaining_fen": 8_000_000,
                       "free_fen": 1_250_000, "held_fen": 0, "paid_fen": 750_000, "returned_fen": 0}

    got = tap.take(9)
    assert [e["type"] for e in got] == [
        "programme.created", "programme.opened", "voucher.issued", "order.placed", "order.delivered",
        "order.confirmed", "claim.submitted", "claim.approved", "claim.paid"]
    by_type = {e["type"]: e for e in got}
    assert [by_type[t]["sequence"] for t in ("order.placed", "order.delivered", "order.confirmed")] == [1, 2, 3]
    assert [by_type[t]["sequence"] for t in ("claim.submitted", "claim.approved", "claim.paid")] == [1, 2, 3]
    assert by_type["order.delivered"]["data"]["on_time"] is True
    assert by_type["claim.paid"]["data"]["payee_id"] == "ag-1"
    assert by_type["voucher.issued"]["data"]["budget_remaining_fen"] == 8_000_000
    assert by_type["voucher.issued"]["actor"] == {"role": "enterprise", "id": ENT}


def test_enterprise_pays_model_makes_the_enterprise_the_payee(vapi):
    pid = vapi.world(redemption_model="enterprise_pays")
    vid = vapi.voucher(pid)["voucher_id"]
    oid = vapi.order(vid).json()["order_id"]
    vapi("POST", f"/api/v1/orders/{oid}/deliver", "agency", "ag-1", json=EVIDENCE)
    vapi("POST", f"/api/v1/orders/{oid}/confirm", "enterprise", ENT)
    assert vapi("POST", "/api/v1/claims", "agency", "ag-1", json={"order_id": oid}).status_code == 403
    claim = vapi("POST", "/api/v1/claims", "enterprise", ENT, json={"order_id": oid})
    assert claim.status_code == 201 and claim.json()["payee_id"] == ENT


@pytest.mark.parametrize("change,rule", [
    ({"code": "PAT-02"}, "barred_item"),
    ({"code": "XX-99"}, "not_in_catalogue"),
    ({"code": "TM-01"}, "agency_kind"),
    ({"agency": "ag-unknown"}, "agency_unknown"),
    ({"price": 1}, "subsidy_rounds_to_zero"),
])
def test_orders_refused_with_the_rule_that_refused_them(vapi, change, rule):
    vid = vapi.voucher(vapi.world())["voucher_id"]
    refused = vapi.order(vid, **change)
    assert refused.status_code == 422, refused.text
    assert refused.json()["rule"] == rule
    if rule == "barred_item":
        assert "2021" in refused.json()["message"]


def test_related_parties_are_refused(vapi):
    pid = vapi.world()
    vapi.feed("on_qualification", qualification_granted(RELATED), qualification_granted(AGENCY_CODE))
    for enterprise in (RELATED, AGENCY_CODE):      # a declared relation; the agency itself
        refused = vapi.order(vapi.voucher(pid, enterprise)["voucher_id"], enterprise=enterprise)
        assert refused.status_code == 422 and refused.json()["rule"] == "related_party"


def test_agency_downgraded_between_order_and_claim(vapi):
    vid = vapi.voucher(vapi.world())["voucher_id"]
    before = vapi.order(vid).json()["order_id"]
    vapi.feed("on_agency", rating_changed("ag-1", 2, "C", False))
    refused = vapi.order(vid)
    assert refused.status_code == 422 and refused.json()["rule"] == "agency_below_rating_line"
    assert vapi("POST", f"/api/v1/orders/{before}/deliver", "agency", "ag-1", json=EVIDENCE).status_code == 200
    vapi("POST", f"/api/v1/orders/{before}/confirm", "enterprise", ENT)
    cid = vapi("POST", "/api/v1/claims", "agency", "ag-1", json={"order_id": before}).json()["claim_id"]
    vapi("POST", f"/api/v1/claims/{cid}/approve")
    assert vapi("POST", f"/api/v1/claims/{cid}/pay", json={"payment_ref": "P-1"}).json()["state"] == "paid"


def test_applications_refused_with_the_rule(vapi):
    pid = vapi.world()
    nothing = vapi("POST", "/api/v1/vouchers", "enterprise", ENT2, json={"programme_id": pid})
    assert nothing.status_code == 422 and nothing.json()["rule"] == "tier_not_held"
    vapi.feed("on_qualification", qualification_granted(ENT2, valid_from="2026-06-02"))   # starts tomorrow
    assert vapi("POST", "/api/v1/vouchers", "enterprise", ENT2, json={"programme_id": pid}).json()["rule"] == "tier_not_held"
    late = vapi.programme(opens_on="2026-07-01")
    window = vapi("POST", "/api/v1/vouchers", "enterprise", ENT, json={"programme_id": late})
    assert window.status_code == 422 and window.json()["rule"] == "application_window"
    draft = vapi("POST", "/api/v1/programmes", json=PROGRAMME).json()["programme_id"]
    not_open = vapi("POST", "/api/v1/vouchers", "enterprise", ENT, json={"programme_id": draft})
    assert not_open.status_code == 409 and not_open.json()["state"] == "draft"
    assert vapi("POST", "/api/v1/vouchers", "enterprise", ENT, json={"programme_id": "p_none"}).status_code == 404


def test_idempotent_application_replays_the_first_voucher(vapi, event_tap):
    tap = event_tap("vouchers", "voucher.issued")
    pid = vapi.world()
    key = {"Idempotency-Key": "apply-" + uuid.uuid4().hex}
    first = vapi("POST", "/api/v1/vouchers", "enterprise", ENT, json={"programme_id": pid}, headers=dict(key))
    again = vapi("POST", "/api/v1/vouchers", "enterprise", ENT, json={"programme_id": pid}, headers=dict(key))
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(tap.take(1)) == 1
    assert vapi("GET", f"/api/v1/programmes/{pid}").json()["remaining_fen"] == 8_000_000

    vid = first.json()["voucher_id"]
    okey = {"Idempotency-Key": "order-" + uuid.uuid4().hex}
    orders = [vapi.order(vid, headers=dict(okey)) for _ in range(2)]
    assert orders[0].json() == orders[1].json()
    assert vapi("GET", f"/api/v1/vouchers/{vid}", "enterprise", ENT).json()["held_fen"] == 500_000


def test_programme_changes_never_touch_issued_vouchers(vapi):
    pid = vapi.world()
    vid = vapi.voucher(pid)["voucher_id"]
    stricter = dict(PROGRAMME, budget_fen=12_000_000, catalogue=[dict(PROGRAMME["catalogue"][0], subsidy_ratio_bp=1000)])
    changed = vapi("PUT", f"/api/v1/programmes/{pid}", json=stricter)
    assert changed.status_code == 200 and changed.json()["revision"] == 2
    assert changed.json()["remaining_fen"] == 10_000_000          # 12 M budget - 2 M issued
    assert vapi.order(vid).json()["subsidy_fen"] == 500_000          # the old 50 %, not the new 10 %
    new_vid = vapi.voucher(pid)["voucher_id"]
    assert vapi.order(new_vid).json()["subsidy_fen"] == 100_000
    cut = vapi("PUT", f"/api/v1/programmes/{pid}", json=dict(PROGRAMME, budget_fen=3_000_000))
    assert cut.status_code == 422 and cut.json()["rule"] == "budget_below_issued"


def test_roles_and_ownership(vapi):
    pid = vapi.world()
    vid = vapi.voucher(pid)["voucher_id"]
    oid = vapi.order(vid).json()["order_id"]
    vapi.feed("on_qualification", qualification_granted(ENT2))
    assert vapi.order(vid, enterprise=ENT2).status_code == 403
    assert vapi("GET", f"/api/v1/vouchers/{vid}", "enterprise", ENT2).status_code == 403
    assert vapi("GET", f"/api/v1/orders/{oid}", "enterprise", ENT2).status_code == 403
    assert vapi("GET", f"/api/v1/orders/{oid}", "agency", "ag-2").status_code == 403
    assert vapi("POST", f"/api/v1/orders/{oid}/deliver", "agency", "ag-2", json=EVIDENCE).status_code == 403
    assert vapi("POST", f"/api/v1/orders/{oid}/cancel", "enterprise", ENT2, json={"reason": "x"}).status_code == 403
    assert vapi("GET", "/api/v1/orders", "agency", "ag-2").json()["items"] == []
    assert [o["order_id"] for o in vapi("GET", "/api/v1/orders", "agency", "ag-1").json()["items"]] == [oid]
    assert vapi("GET", "/api/v1/vouchers", "enterprise", ENT2).json()["items"] == []
    for method, path, body in (("POST", "/api/v1/programmes", PROGRAMME), ("POST", f"/api/v1/programmes/{pid}/close", None),
                               ("POST", f"/api/v1/vouchers/{vid}/revoke", {"reason": "x"}),
                               ("POST", "/api/v1/vouchers", {"programme_id": pid})):
        assert vapi(method, path, "auditor", "a1", json=body).status_code == 403, path
    assert vapi("GET", "/api/v1/orders", role=None).status_code == 401
    assert vapi("GET", f"/api/v1/orders/o_nope_1", "auditor", "a1").status_code == 404
    assert vapi("GET", "/api/v1/claims/garbage", "auditor", "a1").status_code == 404


def test_malformed_programmes_name_the_field(vapi):
    for change, field in (
            ({"budget_fen": 0}, "budget_fen"), ({"budget_fen": 1.5}, "budget_fen"), ({"budget_fen": "100"}, "budget_fen"),
            ({"closes_on": "2025-12-31"}, "closes_on"), ({"region": "33102"}, "region"),
            ({"redemption_model": "cash"}, "redemption_model"), ({"tiers": []}, "tiers"),
            ({"catalogue": [dict(PROGRAMME["catalogue"][0], subsidy_ratio_bp=10001)]}, "catalogue"),
            ({"catalogue": [dict(PROGRAMME["catalogue"][0], service_code="patent")]}, "catalogue"),
            ({"surprise": 1}, "surprise")):
        response = vapi("POST", "/api/v1/programmes", json=dict(PROGRAMME, **change))
        assert response.status_code == 400, (change, response.text)
        assert field in response.json()["fields"], change
    assert vapi("GET", "/api/v1/programmes", "enterprise", ENT).json()["items"] == []


def test_malformed_orders_and_inconsistent_terms(vapi):
    vid = vapi.voucher(vapi.world())["voucher_id"]
    for body, field in (({"price_fen": -5}, "price_fen"), ({"price_fen": 10.5}, "price_fen"),
                        ({"deliver_by": "2026-05-31"}, "deliver_by"), ({"voucher_id": None}, "voucher_id")):
        full = dict({"voucher_id": vid, "agency_id": "ag-1", "service_code": "PAT-01", "price_fen": 100,
                     "deliver_by": "2026-09-30"}, **body)
        response = vapi("POST", "/api/v1/orders", "enterprise", ENT, json=full)
        assert response.status_code == 400 and field in response.json()["fields"], (body, response.text)
    twice = dict(PROGRAMME, tiers=PROGRAMME["tiers"] + PROGRAMME["tiers"][:1])
    assert vapi("POST", "/api/v1/programmes", json=twice).json()["rule"] == "duplicate_tier"


def test_openapi_document_matches_the_real_routes(vapi):
    document = vapi("GET", "/api/v1/openapi.json", role=None).json()
    validate_openapi(document)
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    real = {(ep.url.replace("<", "{").replace(">", "}"), ep.method) for ep in vapi.container.entrypoints
            if getattr(ep, "url", "").startswith("/api/v1/") and ep.url != "/api/v1/openapi.json"}
    assert documented == real and len(real) == 26


def test_health_readiness_and_business_metrics(vapi):
    assert vapi("GET", "/healthz", role=None).json() == {"status": "ok"}
    eventually("ready", lambda: vapi("GET", "/readyz", role=None).status_code == 200)
    assert vapi("GET", "/readyz", role=None).json()["checks"] == {"database": True, "broker": True, "events": True}
    pid = vapi.world()
    vid = vapi.voucher(pid)["voucher_id"]
    oid = vapi.order(vid).json()["order_id"]
    vapi("POST", f"/api/v1/orders/{oid}/deliver", "agency", "ag-1", json=EVIDENCE)
    vapi("POST", f"/api/v1/orders/{oid}/confirm", "enterprise", ENT)
    vapi("POST", "/api/v1/claims", "agency", "ag-1", json={"order_id": oid})
    with entrypoint_hook(vapi.container, "refresh_metrics") as refresh:
        refresh()
    text = vapi("GET", "/metrics", role=None).text
    for line in (f'ipv_programme_budget_fen{{bucket="remaining",programme="{pid}"}} 8e+06',
                 f'ipv_programme_budget_fen{{bucket="free",programme="{pid}"}} 1.5e+06',
                 f'ipv_programme_budget_fen{{bucket="held",programme="{pid}"}} 500000.0',
                 f'ipv_programme_budget_total_fen{{programme="{pid}"}} 1e+07',
                 f'ipv_vouchers_outstanding{{programme="{pid}"}} 1.0',
                 'ipv_claims_pending{state="submitted"} 1.0'):
        assert line in text, line


def test_pages_read_the_buckets_of_the_last_recount_with_when_it_was_made(vapi):
    # Summing every voucher takes seconds at 10,000 of them: a page shows the periodic recount and its time.
    pid = vapi.world()
    vid = vapi.voucher(pid)["voucher_id"]
    recounted = f"/api/v1/programmes/{pid}/balances/recounted"
    exact = vapi("GET", f"/api/v1/programmes/{pid}/balances").json()
    assert vapi("GET", recounted).json() == dict(exact, as_of="2026-06-01T02:00:00+00:00")  # none yet: counted now

    def recount():
        with entrypoint_hook(vapi.container, "refresh_metrics") as run:
            run()
    recount()
    vapi.order(vid)
    now = vapi("GET", f"/api/v1/programmes/{pid}/balances").json()
    assert (now["free_fen"], now["held_fen"]) == (1_500_000, 500_000)
    assert vapi("GET", recounted).json() == dict(exact, as_of="2026-06-01T02:00:00+00:00")   # as it was, and says when
    vapi.clock.advance(seconds=10)
    recount()
    assert vapi("GET", recounted).json() == dict(now, as_of="2026-06-01T02:00:10+00:00")
    vapi.clock.advance(seconds=-5)   # a slower pod's recount, begun before, finishing after: not stored over it
    recount()
    assert vapi("GET", recounted).json()["as_of"] == "2026-06-01T02:00:10+00:00"
    assert vapi("GET", recounted, "enterprise", ENT).status_code == 403
    assert vapi("GET", "/api/v1/programmes/p_nope/balances/recounted").status_code == 404
