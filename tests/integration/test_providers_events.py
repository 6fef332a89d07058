"""The providers service's events over the real broker: the orders read model fed by the vouchers
service, standing events naming the enterprises with open orders, the inbox alert end to end, and
listings that end by date."""
import uuid
from datetime import date, datetime, timezone

import pytest
import requests
from amqp.exceptions import NotFound
from kombu import Connection
from nameko.testing.services import entrypoint_hook, replace_dependencies

from ipvkit.amqp import events_exchange
from ipvkit.clock import FixedClock
from ipvkit.events import new_event
from services.enterprises.service import EnterprisesService
from services.providers.service import ProvidersService
from tests.conftest import dumps, eventually, free_port, publish_raw

pytestmark = pytest.mark.integration

AG = "91350102MA2XYW001E"
E1, E2 = "91350100M000100Y43", "91310115MA1K3YJ15R"
AGENCY = {"credit_code": AG, "name": "福州闽江专利代理事务所", "kind": "patent", "licence_no": "35102", "region": "350102",
          "service_codes": ["PAT-01"], "contact": {"person": "林工", "phone": "0591-87654321"}}
EVIDENCE = {"contract_ref": "HT-1", "invoice_no": "FP-1", "payment_proof_ref": "PZ-1", "deliverable_sha256": "a" * 64}


def order_event(kind, order_id, enterprise_id, **data):
    base = {"programme_id": "p-2026", "voucher_id": f"v-{enterprise_id[-4:]}", "enterprise_id": enterprise_id,
            "order_id": order_id, "agency_id": AG}
    extra = {
        "order.placed": {"service_code": "PAT-01", "price_fen": 300000, "subsidy_fen": 150000, "copay_fen": 150000,
                         "redemption_model": "agency_redeems", "deliver_by": "2026-06-30"},
        "order.delivered": {"deliver_by": "2026-06-30", "delivered_on": "2026-06-01", "on_time": True,
                            "evidence": EVIDENCE},
        "order.disputed": {"reason": "交付物不完整"},
        "order.dispute_resolved": {"upheld": False, "resolution": "交付合格", "released_fen": 0, "released_to": None},
        "claim.rejected": {"claim_id": f"c-{order_id}", "amount_fen": 150000, "reason": "发票不符",
                           "released_fen": 150000, "released_to": "voucher"},
        "claim.paid": {"claim_id": f"c-{order_id}", "amount_fen": 150000, "payee_role": "agency", "payee_id": AG,
                       "payment_ref": "PAY-1", "paid_on": "2026-07-01"},
    }[kind]
    return new_event(type=kind, producer="vouchers", aggregate_id=order_id, sequence=1, actor={"role": "system",
                     "id": "vouchers"}, now=datetime.now(timezone.utc), data={**base, **extra, **data})


def publish(amqp_uri, *events):
    for event in events:
        publish_raw(amqp_uri, events_exchange("vouchers"), event["type"], dumps(event))


def client(config, token):
    base = f"http://{config['WEB_SERVER_ADDRESS']}"

    def call(method, path, role="officer", subject="o1", **kwargs):
        return requests.request(method, base + path, headers=token(role, subject), timeout=10, **kwargs)
    return call


@pytest.fixture
def providers(container_factory, service_config, token):
    container = container_factory(ProvidersService, service_config)
    container.start()
    call = client(service_config, token)
    assert call("POST", "/api/v1/agencies", json=AGENCY).status_code == 201
    call.container = container
    return call


def record(call):
    with entrypoint_hook(call.container, "refresh_service_records") as refresh:  # its timer runs every 10 s
        refresh()
    return call("GET", f"/api/v1/agencies/{AG}/rating").json()["service_record"]


def test_order_outcomes_build_the_record_and_name_who_is_affected(providers, amqp_uri, event_tap):
    late = order_event("order.delivered", "o-2", E1, on_time=False, delivered_on="2026-07-02")
    publish(amqp_uri,
            order_event("order.placed", "o-1", E1), order_event("order.placed", "o-2", E1),
            order_event("order.placed", "o-3", E2), order_event("order.placed", "o-4", E2),
            order_event("order.delivered", "o-1", E1), order_event("claim.paid", "o-1", E1),      # o-1 closed
            late, late,                                                                          # a redelivery
            order_event("order.disputed", "o-3", E2), order_event("order.dispute_resolved", "o-3", E2),
            order_event("claim.rejected", "o-4", E2),                                            # o-4 closed
            order_event("claim.paid", "o-5", E2), order_event("order.placed", "o-5", E2))        # out of order
    expected = {"orders": 5, "open_orders": 2, "delivered": 2, "on_time": 1, "on_time_rate": 0.5,
                "claims_rejected": 1, "disputes": 1, "disputes_upheld": 0}
    eventually("the order record", lambda: record(providers) == expected)

    tap = event_tap("providers", "provider.rating_changed")
    dropped = providers("POST", f"/api/v1/agencies/{AG}/evaluations", json={
        "period_from": "2025-01-01", "period_to": "2025-12-31",
        "deductions": [{"indicator": "ordered_to_stop_new_business"}]})
    assert dropped.json()["level"] == "D"
    event = tap.next()
    assert event["data"]["affected_enterprises"] == [{"enterprise_id": E2, "order_ids": ["o-3"]},
                                                     {"enterprise_id": E1, "order_ids": ["o-2"]}]
    assert (event["data"]["was_eligible"], event["data"]["eligible"], event["data"]["new_level"]) == (True, False, "D")
    assert record(providers) == expected          # the rating did not change the record, nor the reverse
    purge(amqp_uri, "enterprises.on_agency_standing")


def purge(amqp_uri, queue):
    """No enterprises service ran here: its queue (shared on this vhost) must not keep alerts for
    enterprises a later test never registered."""
    with Connection(amqp_uri) as conn:
        try:
            conn.default_channel.queue_purge(queue)
        except NotFound:
            pass


def test_a_fall_below_the_line_a_suspension_and_a_listing_reach_the_enterprises_inbox(
        providers, container_factory, service_config, token, amqp_uri):
    enterprises_config = dict(service_config, MONGO_DB=f"test_{uuid.uuid4().hex[:12]}",
                              WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    enterprises = container_factory(EnterprisesService, enterprises_config)
    enterprises.start()
    inbox_of = client(enterprises_config, token)
    assert inbox_of("POST", "/api/v1/enterprises", json={"credit_code": E1, "name": "福州闽光精密制造有限公司",
                                                         "region": "350102", "industry": "C34",
                                                         "size": "small"}).status_code == 201
    publish(amqp_uri, order_event("order.placed", "o-1", E1))
    eventually("one open order", lambda: record(providers)["open_orders"] == 1)

    def inbox(count):
        items = inbox_of("GET", f"/api/v1/enterprises/{E1}/notifications", role="enterprise", subject=E1).json()["items"]
        return items if len(items) >= count else None

    providers("POST", f"/api/v1/agencies/{AG}/evaluations", json={
        "period_from": "2025-01-01", "period_to": "2025-12-31", "deductions": [{"indicator": "abnormal_filings",
                                                                                "points": 25}]})
    [below] = eventually("the first alert", lambda: inbox(1))
    assert below["kind"] == "agency_below_line" and below["agency_id"] == AG and below["order_ids"] == ["o-1"]
    assert AGENCY["name"] in below["title"] and "低于服务券资格线 B 级" in below["title"]
    assert (below["old_standing"], below["new_standing"]) == ("level unrated", "level C")
    assert "降级前已下的订单可继续履行" in below["body"]

    providers("POST", f"/api/v1/agencies/{AG}/suspend", json={"reason": "停业整顿"})
    suspended = eventually("the second alert", lambda: inbox(2))[0]
    assert suspended["kind"] == "agency_suspended" and "停业整顿" in suspended["body"]
    assert (suspended["old_standing"], suspended["new_standing"]) == ("status active", "status suspended")

    providers("POST", f"/api/v1/agencies/{AG}/blacklist", json={
        "list_type": "severe_dishonesty", "reason": "严重失信", "source": "国家知识产权局", "listed_from": "2026-01-05"})
    listed = eventually("the third alert", lambda: inbox(3))[0]
    assert listed["kind"] == "agency_blacklisted" and listed["order_ids"] == ["o-1"]


def test_a_listing_is_lifted_the_day_after_its_last_day(container_factory, service_config, token, event_tap):
    clock = FixedClock(datetime(2026, 3, 31, 23, 0, tzinfo=timezone.utc))
    container = container_factory(ProvidersService, service_config)
    replace_dependencies(container, clock=clock)
    container.start()
    call = client(service_config, token)
    call("POST", "/api/v1/agencies", json=AGENCY)
    listed = call("POST", f"/api/v1/agencies/{AG}/blacklist", json={
        "list_type": "abnormal_operation", "reason": "未按时公示年报", "source": "市场监管局",
        "listed_from": "2026-01-01", "listed_to": "2026-03-31"})
    assert listed.json()["eligible"] is False
    tap = event_tap("providers", "provider.blacklist_lifted")
    with entrypoint_hook(container, "lift_ended_listings") as lift:
        assert lift() == 0                       # still its last day
        clock.advance(hours=2)
        assert lift() == 1
        assert lift() == 0
    event = tap.next()
    assert event["data"]["reason"] == "listing period ended on 2026-03-31"
    assert str(event["data"]["lifted_on"]) == str(date(2026, 4, 1))
    assert call("GET", f"/api/v1/agencies/{AG}").json()["eligible"] is True
