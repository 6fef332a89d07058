"""During a stream of registrations through the real HTTP API: kill -9 the service, restart RabbitMQ,
restart FerretDB. Afterwards every acknowledged registration exists and its event was published
under exactly one event id. All of it on a private stack (tests/faults/harness.py)."""
import time

import pytest
from pymongo import MongoClient

from ipvkit.storage import LEASE
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
    assert figures["acknowledged"] >= 10, figures
    after = [r for r in results if r["issued"] > recovered_at]
    assert all(r["status"] in (200, 201) for r in after), f"not recovered: {after[:5]}"
    return figures


def test_kill_minus_9_of_the_service_loses_no_acknowledged_registration(stack, enterprises):
    work = Workload(enterprises)
    time.sleep(2)
    enterprises.kill9()
    enterprises.start()
    recovered = time.time()
    work.wait_for_success_after(recovered)      # the workload goes on against the recovered stack
    settle_and_check(stack, enterprises, work.results(), recovered)


def test_a_rabbitmq_restart_loses_no_acknowledged_registration_nor_its_event(stack, enterprises):
    work = Workload(enterprises)
    time.sleep(1.5)
    stack.restart_rabbit()
    recovered = time.time()
    work.wait_for_success_after(recovered)      # the workload goes on against the recovered stack
    settle_and_check(stack, enterprises, work.results(), recovered)


def test_a_ferretdb_crash_and_restart_loses_no_acknowledged_registration(stack, enterprises):
    work = Workload(enterprises)
    time.sleep(2)
    stack.restart_ferret()
    recovered = time.time()
    work.wait_for_success_after(recovered)      # the workload goes on against the recovered stack
    figures = settle_and_check(stack, enterprises, work.results(), recovered)
    assert "500" not in figures["answers"], figures     # an outage is a 503 to retry, not a bug
