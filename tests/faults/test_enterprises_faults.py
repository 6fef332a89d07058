"""During a stream of registrations through the real HTTP API: kill -9 the service, restart RabbitMQ,
restart FerretDB. Afterwards every acknowledged registration exists and its event was published
under exactly one event id. And a kill -9 while it consumes events: each is applied exactly once.
All of it on a private stack (tests/faults/harness.py)."""
import json
import time
from datetime import datetime, timezone

import pytest
import requests
from kombu import Connection
from pymongo import MongoClient

from ipvkit.amqp import events_exchange
from ipvkit.deadletters import queue_depth
from ipvkit.events import new_event
from ipvkit.storage import LEASE
from tests.hostile.profiles import SAMPLES, Seed, credit_code
from tests.faults.harness import PrivateStack, ServiceProcess, Tap, Workload, registration_problems, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    stack = PrivateStack.start()
    yield stack
    stack.stop()


@pytest.fixture
def enterprises(stack):
    tap = Tap(stack.amqp_uri, "enterprises", "enterprise.registered")   # before the first event
    service = ServiceProcess(stack, "enterprises").start()
    service.tap = tap
    yield service
    service.stop()


def rating_dropped(enterprise_id):
    return new_event(type="provider.rating_changed", producer="providers", aggregate_id="ag-1", sequence=2,
                     actor={"role": "officer", "id": "o9"}, now=datetime.now(timezone.utc),
                     data=SAMPLES["provider.rating_changed"](Seed(own={"enterprise": enterprise_id})))


def settle_and_check(stack, service, results, recovered_at):
    docs = MongoClient(stack.mongo_uri)[service.db].enterprises
    # The relay's sweep runs every second, but a relay that lost the database while holding a
    # document's lease cannot release it: those events wait out the lease (30 s) first.
    wait_until("every outbox empty", lambda: docs.count_documents({"outbox.0": {"$exists": True}}) == 0,
               LEASE.total_seconds() + 15)
    time.sleep(1)
    problems, figures = registration_problems(results, list(docs.find()), service.tap.drain())
    print("figures:", figures)
    assert not problems, f"{problems}; {figures}"
    after = [r for r in results if r["issued"] > recovered_at]
    assert all(r["status"] in (200, 201) for r in after), f"not recovered: {after[:5]}"
    return figures


def acknowledged(at_least):
    return lambda outcomes: sum(r["status"] in (200, 201) for r in outcomes) >= at_least


def run_through(work, fault):
    """Registrations flowing, the fault, then on until 10 are acknowledged and one issued after the
    recovery is: however slow the machine, never a fixed time. Returns when it recovered."""
    work.wait_for("registrations flowing before the fault", acknowledged(3))
    fault()
    recovered = time.time()
    work.wait_for_success_after(recovered)      # the workload goes on against the recovered stack
    work.wait_for("10 registrations acknowledged", acknowledged(10))
    return recovered


def test_kill_minus_9_of_the_service_loses_no_acknowledged_registration(stack, enterprises):
    work = Workload(enterprises)
    recovered = run_through(work, lambda: (enterprises.kill9(), enterprises.start()))
    settle_and_check(stack, enterprises, work.results(), recovered)


def test_a_rabbitmq_restart_loses_no_acknowledged_registration_nor_its_event(stack, enterprises):
    work = Workload(enterprises)
    recovered = run_through(work, stack.restart_rabbit)
    settle_and_check(stack, enterprises, work.results(), recovered)


def test_a_ferretdb_crash_and_restart_loses_no_acknowledged_registration(stack, enterprises):
    work = Workload(enterprises)
    recovered = run_through(work, stack.restart_ferret)
    figures = settle_and_check(stack, enterprises, work.results(), recovered)
    assert "500" not in figures["answers"], figures     # an outage is a 503 to retry, not a bug


def test_kill_minus_9_while_consuming_applies_every_event_exactly_once(stack, enterprises):
    # Events arrive while the consumer is killed mid-stream: unacknowledged ones come back and
    # must still notify each enterprise once, no more.
    codes = [credit_code() for _ in range(4)]
    officer = {"Authorization": "Bearer " + enterprises.signer.token("officer", "faults")}
    for code in codes:
        assert requests.post(enterprises.base + "/api/v1/enterprises", headers=officer, timeout=10, json={
            "credit_code": code, "name": "故障测试企业", "region": "350102", "industry": "C34",
            "size": "small"}).status_code == 201
    sent = [rating_dropped(codes[n % len(codes)]) for n in range(300)]
    with Connection(stack.amqp_uri, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        for n, event in enumerate(sent):
            producer.publish(json.dumps(event), exchange=events_exchange("providers"), routing_key=event["type"],
                             delivery_mode=2, content_type="application/json", declare=[events_exchange("providers")])
            if n == 100:
                enterprises.kill9()
        enterprises.start()
    notes = MongoClient(stack.mongo_uri)[enterprises.db].notifications
    wait_until("every event applied", lambda: notes.count_documents({}) >= len(sent), 180)
    time.sleep(1)                                       # nothing more arrives
    assert notes.count_documents({}) == len(sent)
    assert {n["event_id"] for n in notes.find()} == {e["event_id"] for e in sent}
    with Connection(stack.amqp_uri) as conn:
        assert queue_depth(conn, "enterprises.on_agency_standing.dlq") == 0
