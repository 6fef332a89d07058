"""Outbox, consumer, dead letters and expiry of the enterprises service, over the real broker."""
import json
from datetime import datetime, timezone

import eventlet
import pytest
import requests
from kombu import Connection
from nameko.testing.services import entrypoint_hook, replace_dependencies
from pymongo import MongoClient

from ipvkit.amqp import consumer_queues, events_exchange
from ipvkit.clock import FixedClock
from ipvkit.events import new_event
from ipvkit.storage import Repo
from services.enterprises.service import EnterprisesService
from tests.conftest import dumps, eventually, publish_raw

pytestmark = pytest.mark.integration

CODE = "91350100M000100Y43"
ENTERPRISE = {"credit_code": CODE, "name": "福州闽光精密制造有限公司", "region": "350102", "industry": "C34", "size": "small"}
CONSUMER_QUEUE = "enterprises.on_agency_standing"


def post(config, token, path, body, role="officer", subject="o1"):
    return requests.post(f"http://{config['WEB_SERVER_ADDRESS']}{path}", json=body, headers=token(role, subject), timeout=10)


def get(config, token, path, role="officer", subject="o1"):
    return requests.get(f"http://{config['WEB_SERVER_ADDRESS']}{path}", headers=token(role, subject), timeout=10)


def test_crash_between_state_write_and_publish_loses_no_event(container_factory, service_config, token, event_tap,
                                                              monkeypatch, mongo_uri):
    tap = event_tap("enterprises", "enterprise.registered")

    def crash(*args, **kwargs):
        raise RuntimeError("process died after the write, before the publish")
    monkeypatch.setattr(Repo, "flush_outbox", crash)
    first = container_factory(EnterprisesService, service_config)
    first.start()
    post(service_config, token, "/api/v1/enterprises", ENTERPRISE)
    assert tap.drain(1.5) == []                                     # nothing was published ...
    stored = MongoClient(mongo_uri)[service_config["MONGO_DB"]].enterprises.find_one({"_id": CODE})
    assert [e["type"] for e in stored["outbox"]] == ["enterprise.registered"]   # ... but it is kept
    first.kill()

    monkeypatch.undo()
    restarted = container_factory(EnterprisesService, service_config)
    restarted.start()
    event = tap.next()                                              # the relay's sweep sends it
    assert event["event_id"] == stored["outbox"][0]["event_id"]
    eventually("the relay cleared the outbox", lambda: not MongoClient(mongo_uri)[service_config["MONGO_DB"]]
               .enterprises.find_one({"_id": CODE})["outbox"])
    assert tap.drain(1.5) == []                                     # and only once


def rating_dropped(enterprise_id, agency="ag-1"):
    return new_event(type="provider.rating_changed", producer="providers", aggregate_id=agency, sequence=2,
                     actor={"role": "officer", "id": "o9"}, now=datetime.now(timezone.utc), data={
                         "agency_id": agency, "agency_name": "闽江专利代理事务所", "eligibility_line": "B",
                         "eligible": False, "was_eligible": True, "old_level": "B", "new_level": "C", "score": 72,
                         "affected_enterprises": [{"enterprise_id": enterprise_id, "order_ids": ["o-1", "o-2"]}]})


def dead_letters(amqp_uri):
    _, _, dead = consumer_queues(CONSUMER_QUEUE, [])
    got = []
    with Connection(amqp_uri) as conn:
        queue = dead(conn.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            got.append(message)
    return got


def test_malformed_messages_are_dead_lettered_and_the_consumer_keeps_working(
        container_factory, service_config, token, amqp_uri):
    container = container_factory(EnterprisesService, service_config)
    container.start()
    dead_letters(amqp_uri)  # the queue is shared by every test run on this vhost: start empty
    assert post(service_config, token, "/api/v1/enterprises", ENTERPRISE).status_code == 201
    exchange = events_exchange("providers")
    publish_raw(amqp_uri, exchange, "provider.rating_changed", b"{definitely not json")
    wrong_types = rating_dropped(CODE)
    wrong_types["data"]["score"] = "seventy-two"
    publish_raw(amqp_uri, exchange, "provider.rating_changed", dumps(wrong_types))
    unknown_version = dict(rating_dropped(CODE), version=99)
    publish_raw(amqp_uri, exchange, "provider.rating_changed", dumps(unknown_version))
    publish_raw(amqp_uri, exchange, "provider.rating_changed", dumps(rating_dropped("91310115MA1K3YJ15R")))
    good = rating_dropped(CODE)
    publish_raw(amqp_uri, exchange, "provider.rating_changed", dumps(good))
    publish_raw(amqp_uri, exchange, "provider.rating_changed", dumps(good))        # a redelivery

    eventually("a notification", lambda: get(service_config, token, f"/api/v1/enterprises/{CODE}/notifications")
               .json()["items"])
    eventlet.sleep(1)
    inbox = get(service_config, token, f"/api/v1/enterprises/{CODE}/notifications", role="enterprise", subject=CODE).json()
    assert len(inbox["items"]) == 1                                  # the replay added nothing
    note = inbox["items"][0]
    assert note["kind"] == "agency_below_line" and note["agency_id"] == "ag-1"
    assert note["order_ids"] == ["o-1", "o-2"] and "闽江专利代理事务所" in note["title"]
    assert note["old_standing"] == "level B" and note["new_standing"] == "level C"

    reasons = sorted(m.headers["x-ipv-dead-reason"].split(":")[0] for m in dead_letters(amqp_uri))
    assert reasons == ["malformed", "malformed", "malformed", "rejected"]

    read = post(service_config, token, f"/api/v1/enterprises/{CODE}/notifications/{note['notification_id']}/read",
                None, role="enterprise", subject=CODE)
    assert read.status_code == 200 and read.json()["read"] is True


def test_qualifications_expire_when_their_validity_ends(container_factory, service_config, token, event_tap):
    clock = FixedClock(datetime(2027, 12, 31, 23, 0, tzinfo=timezone.utc))
    container = container_factory(EnterprisesService, service_config)
    replace_dependencies(container, clock=clock)
    container.start()
    tap = event_tap("enterprises", "enterprise.qualification_expired")
    post(service_config, token, "/api/v1/enterprises", ENTERPRISE)
    qualification = post(service_config, token, f"/api/v1/enterprises/{CODE}/qualifications", {
        "tier": "srdi_sme", "level": "provincial", "certificate_no": "C-1", "issuing_authority": "福建省工信厅",
        "valid_from": "2025-01-01", "valid_to": "2027-12-31"}).json()

    with entrypoint_hook(container, "expire_qualifications") as expire:
        assert expire() == 0                     # still its last day
        clock.advance(hours=2)                   # 2028-01-01 01:00 UTC
        assert expire() == 1
        assert expire() == 0                     # expiring is done once
    event = tap.next()
    assert event["aggregate_id"] == qualification["qualification_id"] and event["sequence"] == 2
    listed = get(service_config, token, f"/api/v1/enterprises/{CODE}/qualifications").json()["items"]
    assert [q["status"] for q in listed] == ["expired"]


def test_a_failing_handler_is_retried_with_a_delay_then_applied(container_factory, service_config, token, amqp_uri,
                                                               monkeypatch):
    from services.enterprises import domain
    real, calls = domain.standing_notification, []

    def flaky(event):
        calls.append(event["event_id"])
        if len(calls) <= 2:
            raise ConnectionError("database briefly unreachable")
        return real(event)
    monkeypatch.setattr(domain, "standing_notification", flaky)
    container = container_factory(EnterprisesService, service_config)
    container.start()
    assert post(service_config, token, "/api/v1/enterprises", ENTERPRISE).status_code == 201
    event = rating_dropped(CODE)
    publish_raw(amqp_uri, events_exchange("providers"), "provider.rating_changed", dumps(event))
    eventually("a notification", lambda: get(service_config, token, f"/api/v1/enterprises/{CODE}/notifications")
               .json()["items"])
    assert calls == [event["event_id"]] * 3
    metrics = requests.get(f"http://{service_config['WEB_SERVER_ADDRESS']}/metrics", timeout=5).text
    assert 'ipv_event_retries_total{consumer="on_agency_standing",service="enterprises"}' in metrics


def test_a_handler_that_keeps_failing_is_dead_lettered_after_its_retries(container_factory, service_config, token,
                                                                        amqp_uri, monkeypatch):
    from services.enterprises import domain
    calls = []

    def broken(event):
        calls.append(event["event_id"])
        raise ValueError("a bug in the handler")
    monkeypatch.setattr(domain, "standing_notification", broken)
    container = container_factory(EnterprisesService, dict(service_config, EVENT_MAX_RETRIES=2))
    container.start()
    dead_letters(amqp_uri)
    post(service_config, token, "/api/v1/enterprises", ENTERPRISE)
    event = rating_dropped(CODE)
    publish_raw(amqp_uri, events_exchange("providers"), "provider.rating_changed", dumps(event))
    dead = eventually("a dead letter", lambda: dead_letters(amqp_uri), interval=0.2)
    assert calls == [event["event_id"]] * 3                        # the first try and two retries
    assert dead[0].headers["x-ipv-dead-reason"].startswith("retries_exhausted: failed 3 times")
    assert dead[0].headers["x-ipv-retries"] == 2
    assert json.loads(dead[0].body) == event                       # the event itself is kept, unchanged
