"""The read models the vouchers service keeps from other services' events, fed through the real
broker: late, repeated and malformed events."""
import pytest
from kombu import Connection
from pymongo import MongoClient

from ipvkit.amqp import consumer_queues, events_exchange
from tests.conftest import dumps, eventually, publish_raw
from tests.integration.test_vouchers_api import (agency_registered, event, qualification_granted, rating_changed,
                                                 vapi)  # noqa: F401

pytestmark = pytest.mark.integration


def standing(type_, agency_id, sequence, **data):
    base = {"agency_id": agency_id, "agency_name": "玉环专利代理事务所", "eligibility_line": "B", "eligible": False}
    return event(type_, agency_id, sequence, dict(base, **data), "providers")


def send(amqp_uri, *events):
    for e in events:
        producer = e["producer"]
        publish_raw(amqp_uri, events_exchange(producer), e["type"], dumps(e))


def wait_for(config, mongo_uri, collection, doc_id, check):
    db = MongoClient(mongo_uri)[config["MONGO_DB"]]
    eventually(f"{collection}/{doc_id} as expected", lambda: check(db[collection].find_one({"_id": doc_id}) or {}),
               interval=0.05)


def test_agency_standing_follows_the_newest_event_whatever_the_arrival_order(vapi, amqp_uri, service_config, mongo_uri):
    vid = vapi.voucher(vapi.world())["voucher_id"]
    agency = "ag-late"
    # seq 3 (fell to C) arrives before seq 2 (rose to A) and before the registration itself
    send(amqp_uri, rating_changed(agency, 3, "C", False), rating_changed(agency, 2, "A", True, old_level="B"),
         agency_registered(agency), rating_changed(agency, 3, "C", False))
    wait_for(service_config, mongo_uri, "agencies", agency, lambda d: d.get("identity_seq") == 1)
    assert vapi.order(vid, agency=agency).json()["rule"] == "agency_below_rating_line"

    send(amqp_uri, standing("provider.rating_changed", agency, 4, eligible=True, old_level="C", new_level="B",
                            score=85, was_eligible=False))
    wait_for(service_config, mongo_uri, "agencies", agency, lambda d: d.get("rating_seq") == 4)
    assert vapi.order(vid, agency=agency).status_code == 201

    send(amqp_uri, standing("provider.status_changed", agency, 6, old_status="suspended", new_status="active", reason="恢复"),
         standing("provider.status_changed", agency, 5, old_status="active", new_status="suspended", reason="整改"))
    send(amqp_uri, standing("provider.blacklisted", agency, 7, reason="严重失信", source="信用中国",
                            listed_from="2026-06-01", listed_to=None))
    wait_for(service_config, mongo_uri, "agencies", agency, lambda d: d.get("blacklist_seq") == 7)
    assert vapi.order(vid, agency=agency).json()["rule"] == "agency_blacklisted"      # the suspension was superseded
    send(amqp_uri, standing("provider.blacklist_lifted", agency, 8, reason="信用修复", lifted_on="2026-06-01"))
    wait_for(service_config, mongo_uri, "agencies", agency, lambda d: d.get("blacklist_seq") == 8)
    assert vapi.order(vid, agency=agency).status_code == 201


def test_a_revocation_counts_even_when_it_arrives_before_the_grant(vapi, amqp_uri, service_config, mongo_uri):
    pid = vapi.world()
    granted = qualification_granted("91310115MA1K3YJ15R", qid="q_early")
    revoked = event("enterprise.qualification_revoked", "q_early", 2, {
        "qualification_id": "q_early", "enterprise_id": "91310115MA1K3YJ15R", "tier": "srdi_sme",
        "reason": "复核未通过", "revoked_on": "2026-06-01"}, "enterprises")
    send(amqp_uri, revoked, granted, granted)
    wait_for(service_config, mongo_uri, "qualifications", "q_early", lambda d: "valid_from" in d and "revoked_on" in d)
    refused = vapi("POST", "/api/v1/vouchers", "enterprise", "91310115MA1K3YJ15R", json={"programme_id": pid})
    assert refused.status_code == 422 and refused.json()["rule"] == "tier_not_held"


def test_malformed_provider_events_are_dead_lettered_and_the_consumer_goes_on(vapi, amqp_uri, service_config, mongo_uri):
    vid = vapi.voucher(vapi.world())["voucher_id"]
    _, _, dead = consumer_queues("vouchers.on_agency", [])
    with Connection(amqp_uri) as conn:
        dead(conn.default_channel).purge()
    bad = agency_registered("ag-bad")
    bad["data"]["service_codes"] = "PAT-01"                         # a string, not a list
    publish_raw(amqp_uri, events_exchange("providers"), "provider.registered", b"\xff not json")
    send(amqp_uri, bad, agency_registered("ag-good", credit_code="91350100MA2K00003B", related_credit_codes=[]))
    wait_for(service_config, mongo_uri, "agencies", "ag-good", lambda d: d.get("identity_seq") == 1)
    assert vapi.order(vid, agency="ag-good").status_code == 201
    with Connection(amqp_uri) as conn:
        queue = dead(conn.default_channel)
        reasons = []

        def two_taken():
            message = queue.get(no_ack=True)
            if message is not None:
                reasons.append(message.headers["x-ipv-dead-reason"].split(":")[0])
            return len(reasons) >= 2
        eventually("two dead letters", two_taken, interval=0.05)
    assert reasons == ["malformed", "malformed"]
