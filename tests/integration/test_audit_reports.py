"""Audit read models over the real broker and database: fund-use reports against hand-computed
figures, drill-down to ledger entries, CSV export, red flags with their evidence, and
reconciliation against a stand-in vouchers service speaking the agreed RPC."""
import csv
import io
import os
from datetime import datetime, timezone

import pytest
import requests
from kombu import Connection
from openapi_spec_validator import validate as validate_openapi

from ipvkit.amqp import consumer_queues, events_exchange
from ipvkit.events import new_event
from ipvkit.rpc import rpc   # the rpc-vouchers queue as the real service declares it (quorum)
from services.audit.service import AuditService
from tests.conftest import dumps, eventually, publish_raw

pytestmark = pytest.mark.integration

E1, E2 = "91350100M000100Y43", "91310115MA1K3YJ15R"
SHA = "ab" * 32
ACTOR = {"role": "officer", "id": "o1"}


def at(day):
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


class Events:
    """Valid events of every producer, published to the real exchanges in the order built."""

    def __init__(self, amqp_uri):
        self.amqp_uri, self.sent, self.seq = amqp_uri, [], {}

    def emit(self, type_, producer, aggregate, day, data):
        self.seq[aggregate] = self.seq.get(aggregate, 0) + 1
        event = new_event(type=type_, producer=producer, aggregate_id=aggregate, sequence=self.seq[aggregate],
                          data=data, actor=ACTOR, now=at(day))
        publish_raw(self.amqp_uri, events_exchange(producer), type_, dumps(event))
        self.sent.append(event)
        return event

    def programme(self, pid, region, budget, day="2026-01-05"):
        return self.emit("programme.created", "vouchers", pid, day, {
            "programme_id": pid, "name": f"{pid} 知识产权服务券", "region": region, "fund_source": "中小企业发展专项资金",
            "budget_fen": budget, "opens_on": "2026-01-01", "closes_on": "2026-12-31", "validity_days": 365,
            "redemption_model": "agency_redeems",
            "tiers": [{"tier": "srdi_sme", "face_value_fen": 100_000, "annual_cap_fen": 200_000}],
            "catalogue": [
                {"service_code": "PAT-01", "name": "发明专利申请代理", "subsidy_ratio_bp": 8000, "item_cap_fen": 50_000,
                 "agency_kinds": ["patent"]},
                {"service_code": "TM-01", "name": "商标注册代理", "subsidy_ratio_bp": 5000, "item_cap_fen": 20_000,
                 "agency_kinds": ["trademark"]}]})

    def enterprise(self, code, region, day="2026-01-02"):
        return self.emit("enterprise.registered", "enterprises", code, day, {
            "enterprise_id": code, "name": "企业" + code[-4:], "region": region, "industry": "C34", "size": "small"})

    def agency(self, aid, related=(), day="2026-01-03"):
        return self.emit("provider.registered", "providers", aid, day, {
            "agency_id": aid, "name": f"代理机构{aid}", "credit_code": "91110000802100433B", "kind": "both",
            "region": "350102", "service_codes": ["PAT-01", "TM-01"], "related_credit_codes": list(related),
            "eligibility_line": "B", "level": "A", "eligible": True})

    def voucher(self, vid, pid, enterprise, tier, face, day):
        return self.emit("voucher.issued", "vouchers", vid, day, {
            "programme_id": pid, "voucher_id": vid, "enterprise_id": enterprise, "tier": tier, "face_value_fen": face,
            "valid_from": "2026-01-01", "valid_to": "2026-12-31", "budget_remaining_fen": 0})

    def _order(self, oid, vid, pid, enterprise, agency):
        return {"programme_id": pid, "voucher_id": vid, "enterprise_id": enterprise, "order_id": oid,
                "agency_id": agency}

    def order(self, oid, vid, pid, enterprise, agency, code, subsidy, day):
        return self.emit("order.placed", "vouchers", oid, day, dict(
            self._order(oid, vid, pid, enterprise, agency), service_code=code, price_fen=subsidy * 2,
            subsidy_fen=subsidy, copay_fen=subsidy, redemption_model="agency_redeems", deliver_by="2026-06-30"))

    def cancel(self, oid, vid, pid, enterprise, agency, released, to, day):
        return self.emit("order.cancelled", "vouchers", oid, day, dict(
            self._order(oid, vid, pid, enterprise, agency), reason="企业取消", released_fen=released, released_to=to))

    def claim(self, type_, cid, oid, vid, pid, enterprise, agency, amount, day, invoice="INV-1", sha=SHA):
        data = dict(self._order(oid, vid, pid, enterprise, agency), claim_id=cid, amount_fen=amount)
        if type_ in ("claim.submitted", "claim.paid"):
            data.update(payee_role="agency", payee_id=agency)
        if type_ == "claim.submitted":
            data.update(invoice_no=invoice, deliverable_sha256=sha)
        if type_ == "claim.paid":
            data.update(payment_ref="PAY-" + cid, paid_on=day)
        return self.emit(type_, "vouchers", cid, day, data)

    def revoke(self, vid, pid, enterprise, returned, held, day):
        return self.emit("voucher.revoked", "vouchers", vid, day, {
            "programme_id": pid, "voucher_id": vid, "enterprise_id": enterprise, "reason": "资格被撤销",
            "returned_fen": returned, "held_fen": held})


def purge_audit_queue(amqp_uri):
    """The audit queue is durable and shared by every test on this vhost: start each test empty."""
    work, retry, _ = consumer_queues("audit.record", [])
    with Connection(amqp_uri) as conn:
        for queue in (work, retry):
            try:
                queue(conn.default_channel).purge()
            except Exception:  # noqa: BLE001 - not declared yet: nothing to purge
                pass


@pytest.fixture
def audit(container_factory, service_config, token, amqp_uri, tmp_path):
    """Starts the audit service; returns a client with `get(path, **params)` and `wait_projected(n)`."""
    def start(**overrides):
        purge_audit_queue(amqp_uri)
        config = dict(service_config, AUDIT_SIGNING_KEY=str(tmp_path / "audit_key.pem"), **overrides)
        container = container_factory(AuditService, config)
        container.start()
        return Client(config, token, container)
    return start


class Client:
    def __init__(self, config, token, container):
        self.base, self.token, self.container, self.config = f"http://{config['WEB_SERVER_ADDRESS']}", token, container, config

    def get(self, path, role="auditor", **params):
        return requests.get(self.base + path, params=params, headers=self.token(role, "a1"), timeout=30)

    def post(self, path, role="officer"):
        return requests.post(self.base + path, headers=self.token(role, "o1"), timeout=30)

    def wait_projected(self, sent):
        """Until the read models include `sent` (events, the last one published last) or, given a number,
        that many entries. By the last event, not by a count: the service's own events (its red flags,
        its checkpoints) come back into the ledger among them, at a place that depends on timing."""
        what = f"{sent} entries" if isinstance(sent, int) else f"the {len(sent)} events sent"

        def projected():
            head = self.get("/api/v1/audit/head").json()
            if isinstance(sent, int):
                return head["size"] >= sent and head["projected"] >= sent and head
            last = self.get("/api/v1/audit/entries", event_id=sent[-1]["event_id"]).json()["items"]
            return last and head["projected"] > last[0]["position"] and head
        return eventually(f"the read models include {what}", projected)


def seed_life_cycles(ev):
    ev.programme("P1", "350100", 1_000_000, "2026-01-05")
    ev.programme("P2", "310100", 500_000, "2026-01-06")
    ev.voucher("V1", "P1", E1, "srdi_sme", 100_000, "2026-01-10")
    ev.voucher("V2", "P2", E2, "innovative_sme", 60_000, "2026-02-01")
    ev.order("O1", "V1", "P1", E1, "A1", "PAT-01", 40_000, "2026-01-15")
    ev.order("O2", "V1", "P1", E1, "A2", "TM-01", 20_000, "2026-02-02")
    ev.order("O3", "V2", "P2", E2, "A1", "PAT-01", 30_000, "2026-02-03")
    ev.cancel("O2", "V1", "P1", E1, "A2", 20_000, "voucher", "2026-02-04")
    ev.claim("claim.submitted", "C1", "O1", "V1", "P1", E1, "A1", 40_000, "2026-02-10", invoice="INV-1")
    ev.claim("claim.approved", "C1", "O1", "V1", "P1", E1, "A1", 40_000, "2026-02-11")
    paid = ev.claim("claim.paid", "C1", "O1", "V1", "P1", E1, "A1", 40_000, "2026-03-01")
    ev.claim("claim.submitted", "C3", "O3", "V2", "P2", E2, "A1", 30_000, "2026-03-02", invoice="INV-3", sha="cd" * 32)
    ev.revoke("V2", "P2", E2, 30_000, 30_000, "2026-03-05")
    return paid


def row(report, key):
    return next(r for r in report["rows"] if r["key"] == key)


def test_fund_use_reports_match_hand_computed_figures_and_drill_down_to_entries(audit, amqp_uri):
    api = audit()
    ev = Events(amqp_uri)
    paid = seed_life_cycles(ev)
    api.wait_projected(ev.sent)

    by_programme = api.get("/api/v1/audit/reports/fund-use", by="programme").json()
    assert {k: v for k, v in row(by_programme, "P1").items() if k.endswith(("_fen", "_count"))} == {
        "budget_fen": 1_000_000, "budget_count": 1, "issued_fen": 100_000, "issued_count": 1,
        "held_fen": 0, "held_count": 0, "paid_fen": 40_000, "paid_count": 1, "returned_fen": 0, "returned_count": 0}
    p2 = row(by_programme, "P2")
    assert (p2["issued_fen"], p2["held_fen"], p2["held_count"], p2["paid_fen"], p2["returned_fen"]) == \
        (60_000, 30_000, 1, 0, 30_000)
    by_agency = api.get("/api/v1/audit/reports/fund-use", by="agency").json()
    assert (row(by_agency, "A1")["held_fen"], row(by_agency, "A1")["paid_fen"]) == (30_000, 40_000)
    assert (row(by_agency, "A2")["held_fen"], row(by_agency, "A2")["held_count"]) == (0, 0)
    by_tier = api.get("/api/v1/audit/reports/fund-use", by="tier", programme="P2").json()
    assert [(r["key"], r["issued_fen"], r["returned_fen"]) for r in by_tier["rows"]] == [
        ("innovative_sme", 60_000, 30_000), (None, 0, 0)]
    by_region = api.get("/api/v1/audit/reports/fund-use", by="region").json()
    assert row(by_region, "350100")["paid_fen"] == 40_000 and row(by_region, "310100")["budget_fen"] == 500_000
    by_code = api.get("/api/v1/audit/reports/fund-use", by="service_code").json()
    assert (row(by_code, "PAT-01")["held_fen"], row(by_code, "TM-01")["held_fen"]) == (30_000, 0)
    by_month = api.get("/api/v1/audit/reports/fund-use", by="month").json()
    assert [(r["key"], r["paid_fen"]) for r in by_month["rows"]] == [("2026-01", 0), ("2026-02", 0), ("2026-03", 40_000)]

    drill = api.get("/api/v1/audit/reports/fund-use/entries", measure="paid", programme="P1").json()
    assert [(i["event_id"], i["type"], i["fen"]) for i in drill["items"]] == [(paid["event_id"], "claim.paid", 40_000)]
    entry = api.get(f"/api/v1/audit/entries/{drill['items'][0]['position']}").json()
    assert entry["event"]["data"]["claim_id"] == "C1"

    exported = api.get("/api/v1/audit/reports/fund-use", by="programme", format="csv")
    assert exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["key"], r["paid_fen"], r["returned_fen"]) for r in rows] == [("P1", "40000", "0"), ("P2", "0", "30000")]
    assert api.get("/api/v1/audit/anomalies").json()["items"] == []     # clean life cycles raise nothing


def test_readers_only_and_bad_queries_name_the_field(audit):
    api = audit()
    assert api.get("/api/v1/audit/reports/fund-use", role="enterprise", by="programme").status_code == 403
    assert api.get("/api/v1/audit/reports/fund-use", role="ops", by="programme").status_code == 403
    assert requests.get(api.base + "/api/v1/audit/head", timeout=5).status_code == 401
    bad = api.get("/api/v1/audit/reports/fund-use", by="colour")
    assert bad.status_code == 400 and "by" in bad.json()["fields"]
    assert api.post("/api/v1/audit/checkpoints", role="auditor").status_code == 403
    empty = api.post("/api/v1/audit/checkpoints", role="ops")
    assert empty.status_code == 422 and empty.json()["rule"] == "ledger_empty"
    assert api.get("/api/v1/audit/entries/5").status_code == 404
    assert api.get("/api/v1/audit/anomalies/an-nothing").status_code == 404
    document = api.get("/api/v1/openapi.json").json()
    validate_openapi(document)
    assert "/api/v1/audit/entries/{position}/proof" in document["paths"]


def test_red_flags_carry_their_evidence_and_are_published(audit, amqp_uri, event_tap):
    api = audit(AUDIT_CONCENTRATION_MIN_ORDERS=4, AUDIT_CONCENTRATION_SHARE_PCT=75)
    tap = event_tap("audit", "audit.anomaly_detected")
    ev = Events(amqp_uri)
    ev.programme("P1", "350100", 10_000_000)
    ev.enterprise(E1, "350102")
    ev.enterprise(E2, "310115")
    ev.agency("A1")
    related = ev.agency("A3", related=[E1])
    ev.voucher("V1", "P1", E1, "srdi_sme", 1_000_000, "2026-01-10")
    ev.voucher("V2", "P1", E2, "srdi_sme", 100_000, "2026-01-10")
    # split: two PAT-01 orders with A1 a week apart, each under the 50,000 cap, 60,000 together
    s1 = ev.order("O1", "V1", "P1", E1, "A1", "PAT-01", 30_000, "2026-02-01")
    s2 = ev.order("O2", "V1", "P1", E1, "A1", "PAT-01", 30_000, "2026-02-08")
    rp = ev.order("O3", "V1", "P1", E1, "A3", "TM-01", 10_000, "2026-02-09")            # related party
    drop = ev.emit("provider.blacklisted", "providers", "A3", "2026-02-10", {
        "agency_id": "A3", "agency_name": "代理机构A3", "eligibility_line": "B", "eligible": False,
        "reason": "虚假材料", "source": "国家知识产权局", "listed_from": "2026-02-10", "listed_to": None})
    late = ev.order("O4", "V2", "P1", E2, "A3", "TM-01", 10_000, "2026-02-11")          # after blacklisting
    conc = ev.order("O5", "V1", "P1", E1, "A1", "PAT-01", 50_000, "2026-05-01")   # A1: 3 of region 350102's 4
    ev.order("O6", "V1", "P1", E1, "A1", "PAT-01", 50_000, "2026-05-02")
    ev.order("O7", "V1", "P1", E1, "A1", "PAT-01", 50_000, "2026-05-03")
    first = ev.claim("claim.submitted", "C1", "O3", "V1", "P1", E1, "A3", 10_000, "2026-03-01", invoice="INV-9")
    again = ev.claim("claim.submitted", "C2", "O4", "V2", "P1", E2, "A3", 10_000, "2026-03-02", invoice="inv-9 ",
                     sha="ef" * 32)
    caps = [ev.claim("claim.submitted", f"K{n}", f"O{n}", "V1", "P1", E1, "A1", 50_000, "2026-05-10",
                     invoice=f"INV-K{n}", sha=f"{n:02d}" * 32) for n in (5, 6, 7)]
    api.wait_projected(ev.sent)

    flags = {f["rule"]: f for f in api.get("/api/v1/audit/anomalies").json()["items"]}
    assert sorted(flags) == ["agency_concentration", "claims_at_cap", "duplicate_evidence", "order_after_downgrade",
                             "related_party", "split_orders"]
    assert set(flags["split_orders"]["evidence_event_ids"]) == {s1["event_id"], s2["event_id"]}
    assert set(flags["related_party"]["evidence_event_ids"]) == {rp["event_id"], related["event_id"]}
    assert set(flags["order_after_downgrade"]["evidence_event_ids"]) == {drop["event_id"], late["event_id"]}
    assert set(flags["duplicate_evidence"]["evidence_event_ids"]) == {first["event_id"], again["event_id"]}
    assert set(flags["claims_at_cap"]["evidence_event_ids"]) == {c["event_id"] for c in caps}
    assert conc["event_id"] in flags["agency_concentration"]["evidence_event_ids"]
    assert flags["agency_concentration"]["subject"] == {"agency_id": "A1", "region": "350102"}
    position = api.get("/api/v1/audit/entries", event_id=late["event_id"]).json()["items"][0]["position"]
    assert position in flags["order_after_downgrade"]["ledger_positions"]

    published = [tap.next() for _ in range(6)]
    assert {e["data"]["rule"] for e in published} == set(flags)
    one = api.get(f"/api/v1/audit/anomalies/{flags['split_orders']['anomaly_id']}").json()
    assert one["summary"].startswith("2 orders for PAT-01 with agency A1")
    # the flags' own events come back through the audit exchange into the ledger
    eventually("6 anomaly events in the ledger",
               lambda: len(api.get("/api/v1/audit/entries", type="audit.anomaly_detected").json()["items"]) >= 6)


class StandInVouchers:
    """The agreed RPC of the vouchers service, answering with figures the test sets."""
    name = "vouchers"
    programmes, vouchers = [], {}

    @rpc
    def programme_balances(self):
        return StandInVouchers.programmes

    @rpc
    def voucher_balances(self, programme_id, after=None, limit=1000):
        listed = sorted((v for v in StandInVouchers.vouchers.values() if v["programme_id"] == programme_id),
                        key=lambda v: v["voucher_id"])
        page = [v for v in listed if after is None or v["voucher_id"] > after][:limit]
        return {"vouchers": page, "next": page[-1]["voucher_id"] if len(page) == limit else None}


def test_reconciliation_reports_each_difference_with_the_entries_behind_it(audit, amqp_uri, container_factory,
                                                                           service_config):
    api = audit(AUDIT_RPC_TIMEOUT_S=1)
    ev = Events(amqp_uri)
    seed_life_cycles(ev)
    api.wait_projected(ev.sent)
    stopped = api.get("/api/v1/audit/reconciliation").json()      # no vouchers service yet: the ledger's side
    assert (stopped["ok"], stopped["compared"]) == (False, False) and "not running" in stopped["reason"]
    assert [(b["programme_id"], b["paid"], b["held"]) for b in stopped["ledger_balances"]] == [
        ("P1", 40_000, 0), ("P2", 0, 30_000)]
    StandInVouchers.programmes = [
        {"programme_id": "P1", "budget_fen": 1_000_000, "remaining_fen": 900_000, "free_fen": 60_000, "held_fen": 0,
         "paid_fen": 40_000, "returned_fen": 0},
        {"programme_id": "P2", "budget_fen": 500_000, "remaining_fen": 440_000, "free_fen": 0, "held_fen": 30_000,
         "paid_fen": 0, "returned_fen": 30_000}]
    StandInVouchers.vouchers = {
        "V1": {"voucher_id": "V1", "programme_id": "P1", "enterprise_id": E1, "face_value_fen": 100_000,
               "free_fen": 60_000, "held_fen": 0, "paid_fen": 40_000, "returned_fen": 0, "status": "active"},
        "V2": {"voucher_id": "V2", "programme_id": "P2", "enterprise_id": E2, "face_value_fen": 60_000,
               "free_fen": 0, "held_fen": 30_000, "paid_fen": 0, "returned_fen": 30_000, "status": "revoked"}}
    stand_in = container_factory(StandInVouchers, dict(service_config, WEB_SERVER_ADDRESS="127.0.0.1:0"))
    stand_in.start()
    agreed = api.get("/api/v1/audit/reconciliation").json()
    assert agreed["ok"] is True and [p["programme_id"] for p in agreed["programmes"]] == ["P1", "P2"]
    assert agreed["next_cursor"] is None
    first = api.get("/api/v1/audit/reconciliation", limit=1).json()    # a page of programmes at a time
    rest = api.get("/api/v1/audit/reconciliation", limit=1, after=first["next_cursor"]).json()
    assert [p["programme_id"] for p in first["programmes"] + rest["programmes"]] == ["P1", "P2"]
    assert (first["next_cursor"], rest["next_cursor"]) == ("P1", None)

    # The service says 5,000 more was paid on V1 than the ledger shows, and knows a voucher the ledger does not.
    StandInVouchers.programmes[0].update(paid_fen=45_000, free_fen=55_000)
    StandInVouchers.vouchers["V1"].update(paid_fen=45_000, free_fen=55_000)
    StandInVouchers.vouchers["V9"] = dict(StandInVouchers.vouchers["V1"], voucher_id="V9")
    report = api.get("/api/v1/audit/reconciliation", programme="P1").json()
    assert report["ok"] is False
    p1 = report["programmes"][0]
    assert p1["differences"] == {"free": {"ledger": 60_000, "service": 55_000},
                                 "paid": {"ledger": 40_000, "service": 45_000}}
    v1 = next(v for v in p1["vouchers"] if v["voucher_id"] == "V1")
    assert v1["differences"]["paid"] == {"ledger": 40_000, "service": 45_000}
    v1_events = [e for e in ev.sent if e["data"].get("voucher_id") == "V1" and e["type"] != "claim.approved"
                 and e["type"] != "claim.submitted"]
    assert [e["event_id"] for e in v1["entries"]] == [e["event_id"] for e in v1_events]
    v9 = next(v for v in p1["vouchers"] if v["voucher_id"] == "V9")
    assert v9["differences"]["face_value"] == {"ledger": 0, "service": 100_000} and v9["entries"] == []
    assert {e["type"] for e in p1["entries"]} == {"programme.created"}
