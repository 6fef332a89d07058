"""Two pods of the vouchers service on one database and vhost, with no lock shared between them:
the guarded single-document writes alone keep the money exact. Also the relay's two recovery paths
and the gauges moving on the write."""
import eventlet
import pytest
from nameko.testing.services import entrypoint_hook, replace_dependencies
from prometheus_client import REGISTRY

from services.vouchers import storage
from services.vouchers.service import VouchersService
from tests.conftest import free_port
from tests.integration.test_vouchers_api import ENT, Client, qualification_granted, vapi  # noqa: F401
from tests.integration.test_vouchers_money import conserved, enterprise_codes, rpc, stored_state  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def pods(vapi, container_factory, service_config, token):
    """`vapi` and a second container of the service: same database and vhost, its own port and process state."""
    config = dict(service_config, WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    container = container_factory(VouchersService, config)
    replace_dependencies(container, clock=vapi.clock)
    container.start()
    return vapi, Client(container, config, token, vapi.clock)


def test_50_concurrent_orders_across_two_pods_never_overspend_one_voucher(pods, event_tap, service_config, mongo_uri):
    a, b = pods
    tap = event_tap("vouchers", "order.placed")
    pid = a.world()
    vid = a.voucher(pid)["voucher_id"]                               # 2,000,000 fen
    responses = list(eventlet.GreenPool(50).imap(lambda i: (a, b)[i % 2].order(vid, price=260_000), range(50)))
    created = [r.json() for r in responses if r.status_code == 201]
    assert sorted({r.status_code for r in responses}) == [201, 409], {r.status_code for r in responses}
    assert {r.request.url.split("/api")[0] for r in responses if r.status_code == 201} == {a.base, b.base}
    assert sum(o["subsidy_fen"] for o in created) == 2_000_000 and len(created) == 16   # 15 × 130,000 + 50,000
    _, [voucher] = stored_state(service_config, mongo_uri, pid)
    assert sorted(voucher["orders"]) == sorted(o["order_id"] for o in created)          # every 201 is a stored hold
    assert (voucher["free_fen"], voucher["held_fen"]) == (0, 2_000_000)
    assert sorted(e["data"]["order_id"] for e in tap.take(len(voucher["orders"]))) == sorted(voucher["orders"])   # one event each


def test_50_concurrent_applications_across_two_pods_never_exceed_a_small_budget(
        pods, rpc, event_tap, service_config, mongo_uri):
    a, b = pods
    tap = event_tap("vouchers", "voucher.issued")
    codes = enterprise_codes(50)
    a.feed("on_qualification", *[qualification_granted(code) for code in codes])
    pid = a.programme(budget_fen=7_000_000)                           # 3 vouchers of 2,000,000 and 1,000,000 left
    responses = list(eventlet.GreenPool(50).imap(
        lambda i: (a, b)[i % 2]("POST", "/api/v1/vouchers", "enterprise", codes[i], json={"programme_id": pid}),
        range(50)))
    assert sorted(r.status_code for r in responses) == [201] * 3 + [422] * 47
    assert {r.json()["rule"] for r in responses if r.status_code == 422} == {"budget_exhausted"}
    programme, vouchers = stored_state(service_config, mongo_uri, pid)
    assert sorted(v["_id"] for v in vouchers) == sorted(r.json()["voucher_id"] for r in responses if r.status_code == 201)
    assert programme["remaining_fen"] == 1_000_000
    assert sorted(e["data"]["voucher_id"] for e in tap.take(len(vouchers))) == sorted(v["_id"] for v in vouchers)
    [balance] = [x for x in rpc.programme_balances() if x["programme_id"] == pid]
    assert conserved(balance) and (balance["remaining_fen"], balance["free_fen"]) == (1_000_000, 6_000_000)


def test_an_event_the_broker_refused_is_published_by_the_next_sweep(vapi, event_tap, monkeypatch):
    tap = event_tap("vouchers", "order.placed")
    vid = vapi.voucher(vapi.world())["voucher_id"]

    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")
    monkeypatch.setattr(storage.VoucherRepo, "_publish", refuse)
    oid = vapi.order(vid).json()["order_id"]                         # stored; its event waits in the outbox
    monkeypatch.undo()
    assert tap.drain(1) == []
    vapi.clock.advance(seconds=3)                                     # past the retry delay, not the lease
    with entrypoint_hook(vapi.container, "relay_outbox") as relay:
        relay()
    assert [e["data"]["order_id"] for e in tap.take(1)] == [oid]


def test_events_a_pod_left_when_it_died_after_the_write_are_published_by_the_other(pods, event_tap, monkeypatch):
    a, b = pods
    tap = event_tap("vouchers", "order.placed")
    vid = a.voucher(a.world())["voucher_id"]
    monkeypatch.setattr(storage.VoucherRepo, "flush_outbox", lambda *a, **kw: 0)   # a dies before publishing
    oid = a.order(vid).json()["order_id"]
    monkeypatch.undo()
    a.clock.advance(seconds=31)                                       # b's collection scan runs once per lease
    with entrypoint_hook(b.container, "relay_outbox") as relay:
        relay()
    assert [e["data"]["order_id"] for e in tap.take(1)] == [oid]


def test_the_gauges_move_on_the_write_before_the_timer_runs(vapi):
    def gauge(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0

    pid = vapi.world()
    vid = vapi.voucher(pid)["voucher_id"]
    assert gauge("ipv_programme_budget_fen", programme=pid, bucket="remaining") == 8_000_000
    assert gauge("ipv_programme_budget_fen", programme=pid, bucket="free") == 2_000_000
    assert gauge("ipv_vouchers_outstanding", programme=pid) == 1
    vapi.order(vid)                                                   # 500,000 held
    assert gauge("ipv_programme_budget_fen", programme=pid, bucket="free") == 1_500_000
    assert gauge("ipv_programme_budget_fen", programme=pid, bucket="held") == 500_000
    assert vapi("POST", f"/api/v1/vouchers/{vid}/revoke", json={"reason": "fraud"}).status_code == 200
    assert gauge("ipv_programme_budget_fen", programme=pid, bucket="returned") == 1_500_000
    assert gauge("ipv_vouchers_outstanding", programme=pid) == 0
