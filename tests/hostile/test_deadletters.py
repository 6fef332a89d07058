"""Ops list and replay dead letters (`python -m ipvkit.deadletters`), over the real broker."""
import io
import json
from datetime import datetime, timezone

import pytest
from kombu import Connection, Queue

from ipvkit.amqp import UNROUTED_QUEUE, events_exchange
from ipvkit.deadletters import main, queue_depth
from ipvkit.events import new_event
from tests.conftest import dumps, eventually, publish_raw
from tests.hostile.conftest import drain
from tests.hostile.profiles import Seed, credit_code, enterprise_body, SAMPLES

pytestmark = pytest.mark.integration

QUEUE = "enterprises.on_agency_standing"


def cli(amqp_uri, *argv):
    out = io.StringIO()
    code = main(["--amqp-uri", amqp_uri, *argv], out=out)
    return code, out.getvalue()


def rating_event(enterprise):
    return new_event(type="provider.rating_changed", producer="providers", aggregate_id="ag-1", sequence=2,
                     actor={"role": "officer", "id": "o9"}, now=datetime.now(timezone.utc),
                     data=SAMPLES["provider.rating_changed"](Seed(own={"enterprise": enterprise})))


def wait_depth(amqp_uri, queue, want):
    with Connection(amqp_uri) as conn:
        eventually(f"{want} messages in {queue}", lambda: queue_depth(conn, queue) == want)


def inbox(client, enterprise):
    return client("GET", f"/api/v1/enterprises/{enterprise}/notifications").json()["items"]


def test_ops_list_dead_letters_then_replay_one_once_its_cause_is_fixed(start_service, amqp_uri):
    _, client = start_service("enterprises")
    drain(amqp_uri, QUEUE + ".dlq")
    exchange = events_exchange("providers")
    enterprise = credit_code()
    event = rating_event(enterprise)                     # for an enterprise not registered yet
    publish_raw(amqp_uri, exchange, "provider.rating_changed", b"{definitely not json")
    publish_raw(amqp_uri, exchange, "provider.rating_changed", dumps(event))
    wait_depth(amqp_uri, QUEUE + ".dlq", 2)

    code, overview = cli(amqp_uri, "list")
    assert code == 0
    assert [line.split() for line in overview.splitlines() if line.startswith(QUEUE)] == [[QUEUE + ".dlq", "2", "0"]]
    code, listing = cli(amqp_uri, "list", QUEUE)
    assert code == 0 and listing.startswith(f"{QUEUE}.dlq: 2 dead letter(s)")
    assert "reason: malformed: not JSON" in listing and "b'{definitely not json'" in listing
    assert f"provider.rating_changed {event['event_id']}" in listing
    assert f"reason: rejected: enterprise {enterprise} is not registered here" in listing
    assert cli(amqp_uri, "list", QUEUE + ".dlq")[1] == listing      # listing took nothing away

    assert client("POST", "/api/v1/enterprises", json=enterprise_body(enterprise)).status_code == 201
    assert cli(amqp_uri, "replay", QUEUE, "--id", event["event_id"]) == (
        0, f"replayed 1 to {QUEUE}; 1 others left in the DLQ\n")
    eventually("the replayed event applied", lambda: inbox(client, enterprise))
    assert inbox(client, enterprise)[0]["event_id"] == event["event_id"]
    left = drain(amqp_uri, QUEUE + ".dlq")
    assert [m.body for m in left] == [b"{definitely not json"]            # the other one is untouched

    assert cli(amqp_uri, "replay", QUEUE, "--id", event["event_id"]) == (
        1, f"no dead letter with event id {event['event_id']} in {QUEUE}.dlq\n")
    assert cli(amqp_uri, "list", "nobody.nothing")[1] == "error: no queue nobody.nothing.dlq on this broker\n"


def test_replay_all_starts_retries_afresh_and_a_poison_just_comes_back(start_service, service_config, amqp_uri,
                                                                       monkeypatch):
    from services.enterprises import domain
    real, calls = domain.standing_notification, []

    def fails_twice_then_once_more(event):
        calls.append(event["event_id"])
        if len(calls) in (1, 2, 3):   # the first try and its retry, then the first try after replay
            raise ConnectionError("database briefly unreachable")
        return real(event)
    monkeypatch.setattr(domain, "standing_notification", fails_twice_then_once_more)
    service_config["EVENT_MAX_RETRIES"] = 1
    _, client = start_service("enterprises")
    drain(amqp_uri, QUEUE + ".dlq")
    enterprise = credit_code()
    assert client("POST", "/api/v1/enterprises", json=enterprise_body(enterprise)).status_code == 201
    event = rating_event(enterprise)
    publish_raw(amqp_uri, events_exchange("providers"), "provider.rating_changed", dumps(event))
    publish_raw(amqp_uri, events_exchange("providers"), "provider.rating_changed", b"\xff\xfe not utf-8")
    wait_depth(amqp_uri, QUEUE + ".dlq", 2)
    assert "retries 1" in cli(amqp_uri, "list", QUEUE)[1]

    assert cli(amqp_uri, "replay", QUEUE, "--all") == (0, f"replayed 2 to {QUEUE}; 0 others left in the DLQ\n")
    eventually("a replayed event applied", lambda: inbox(client, enterprise))
    # Had the replay kept `x-ipv-retries: 1`, the failure after it would have dead-lettered it again.
    assert calls == [event["event_id"]] * 4
    wait_depth(amqp_uri, QUEUE + ".dlq", 1)
    back = drain(amqp_uri, QUEUE + ".dlq")[0]
    assert back.body == b"\xff\xfe not utf-8"
    assert back.headers["x-ipv-replays"] == 1
    assert back.headers["x-ipv-dead-reason"].startswith("malformed: not UTF-8")


def test_an_event_published_before_its_consumer_existed_is_kept_and_replayed_to_it(amqp_uri):
    # A producer nobody listens to yet (audit binds `#` on the real ones), as when events are published
    # before a new service first declares its queue.
    exchange = events_exchange("newcomer")
    awaited, orphan = (dict(rating_event(credit_code()), producer="newcomer", type=t)
                       for t in ("newcomer.late_one", "newcomer.late_two"))
    with Connection(amqp_uri) as conn:
        UNROUTED_QUEUE(conn.default_channel).declare()
        before = queue_depth(conn, "ipv.unrouted")
        for event in (awaited, orphan):
            publish_raw(amqp_uri, exchange, event["type"], dumps(event))
        eventually("both events unrouted", lambda: queue_depth(conn, "ipv.unrouted") >= before + 2, interval=0.05)
        late = Queue(f"test-late-{awaited['event_id'][:8]}", exchange=exchange, routing_key=awaited["type"],
                     exclusive=True)  # gone with this connection, so a later run's event is unrouted again
        late(conn.default_channel).declare()                                       # the consumer arrives

        code, said = cli(amqp_uri, "replay", "ipv.unrouted", "--id", awaited["event_id"])
        assert code == 0 and said.startswith("replayed 1 to their producers' exchanges"), said
        message = eventually("the replayed event", lambda: late(conn.default_channel).get(no_ack=True), interval=0.05)
        assert json.loads(message.body)["event_id"] == awaited["event_id"]
        # The other still has no consumer: replaying everything keeps it in ipv.unrouted.
        assert cli(amqp_uri, "replay", "ipv.unrouted", "--all")[0] == 0
        kept = [json.loads(m.body) for m in drain(amqp_uri, "ipv.unrouted")]
        assert [e["event_id"] for e in kept if e.get("type") == "newcomer.late_two"] == [orphan["event_id"]]


def test_every_queue_a_service_declares_is_a_quorum_queue(start_service, amqp_uri):
    from amqp.exceptions import PreconditionFailed
    from ipvkit.amqp import consumer_queue_arguments, rpc_queue_arguments
    start_service("vouchers")
    wanted = dict(consumer_queue_arguments("vouchers.on_agency"), **{"rpc-vouchers": rpc_queue_arguments()})
    with Connection(amqp_uri) as conn:
        for name, arguments in wanted.items():
            assert queue_depth(conn, name) is not None, f"{name} not declared"
            channel = conn.channel()
            # The same arguments but the type: a queue of another type by that name must be refused.
            with pytest.raises(PreconditionFailed, match="inequivalent arg 'x-queue-type'"):
                channel.queue_declare(name, durable=True, auto_delete=False,
                                      arguments=dict(arguments, **{"x-queue-type": "classic"}))


def test_a_message_that_keeps_coming_back_is_dead_lettered_by_the_broker_and_replays(amqp_uri):
    """The work queue's delivery limit: a message handed out and returned DELIVERY_LIMIT + 1 times (each time
    its consumer died holding it) goes to the DLQ, at least once, where ops see why and replay it."""
    from ipvkit.amqp import DELIVERY_LIMIT, consumer_queues
    name = f"test-limit-{credit_code()}"
    work, retry, dead = consumer_queues(name, [(events_exchange("newcomer"), "newcomer.limit_tested")])
    with Connection(amqp_uri) as conn:
        for queue in (work, retry, dead):
            queue(conn.default_channel).declare()
        try:
            publish_raw(amqp_uri, events_exchange("newcomer"), "newcomer.limit_tested", b'{"poison": 1}')
            channel = conn.channel()
            for n in range(DELIVERY_LIMIT + 1):
                message = eventually(f"delivery {n + 1}", lambda: channel.basic_get(name, no_ack=False), interval=0.02)
                channel.basic_reject(message.delivery_tag, requeue=True)
            wait_depth(amqp_uri, name + ".dlq", 1)
            assert queue_depth(conn, name) == 0
            code, listing = cli(amqp_uri, "list", name)
            assert code == 0 and "reason: broker: delivery_limit" in listing, listing
            assert cli(amqp_uri, "replay", name, "--all") == (0, f"replayed 1 to {name}; 0 others left in the DLQ\n")
            wait_depth(amqp_uri, name, 1)
            again = channel.basic_get(name, no_ack=True)
            assert again.body in ('{"poison": 1}', b'{"poison": 1}') and "x-death" not in again.properties["application_headers"]
        finally:
            for queue in (work, retry, dead):
                conn.default_channel.queue_delete(queue.name)
