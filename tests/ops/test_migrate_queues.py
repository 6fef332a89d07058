"""Moving an installation's classic queues to quorum queues (`python -m ipvkit.migrate_queues`), on the real
broker: scratch queues declared as the code declared them before (classic), holding events, delayed
retries and dead letters, are moved with nothing lost or reordered, end up exactly as the code declares
them now, keep receiving what is published, and a second run (or one after a crash) finishes the job."""
import io
import time
import uuid

import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue

from ipvkit.amqp import consumer_queue_arguments, events_exchange
from ipvkit.deadletters import queue_depth
from ipvkit.migrate_queues import MIGRATING, Refused, Spec, main, migrate_one, plan, planned, run
from tests.conftest import CONFIRMED, eventually, publish_raw

pytestmark = pytest.mark.integration


def classic_consumer(conn, name, exchange, key):
    """A consumer's queues as ipvkit/amqp.py declared them before quorum queues."""
    Queue(name, exchange=exchange, routing_key=key, durable=True,
          queue_arguments={"x-queue-type": "classic"})(conn.default_channel).declare()
    Queue(f"{name}.retry", durable=True, queue_arguments={
        "x-queue-type": "classic", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": name})(
        conn.default_channel).declare()
    Queue(f"{name}.dlq", durable=True, queue_arguments={"x-queue-type": "classic"})(conn.default_channel).declare()


def specs_for(name, exchange, key):
    arguments = consumer_queue_arguments(name)
    return [Spec(name, arguments[name], [(exchange, key)]), Spec(f"{name}.retry", arguments[f"{name}.retry"]),
            Spec(f"{name}.dlq", arguments[f"{name}.dlq"])]


def get_all(conn, name):
    channel, got = conn.channel(), []
    while (m := channel.basic_get(name, no_ack=True)) is not None:
        got.append((m.body if isinstance(m.body, bytes) else m.body.encode(), m.properties))
    channel.close()
    return got


def consume_all(conn, name):
    """The bodies in a queue, by a consumer: a queue with a single active consumer refuses basic.get."""
    channel, got = conn.channel(), []
    expected = channel.queue_declare(name, passive=True).message_count
    channel.basic_consume(name, no_ack=True, callback=lambda m: got.append(m.body if isinstance(m.body, bytes)
                                                                         else m.body.encode()))
    while len(got) < expected:
        conn.drain_events(timeout=10)
    channel.close()
    return got


def is_declared_as(conn, spec):
    channel = conn.channel()
    try:
        channel.queue_declare(spec.name, durable=True, auto_delete=False, arguments=spec.arguments)
        return True
    except PreconditionFailed:
        return False
    finally:
        if channel.is_open:
            channel.close()


@pytest.fixture
def scratch(amqp_uri):
    name = f"test-migrate-{uuid.uuid4().hex[:8]}"
    exchange = events_exchange("migrating" + name[-8:])
    yield name, exchange
    with Connection(amqp_uri) as conn:
        for queue in (name, f"{name}.retry", f"{name}.dlq", name + MIGRATING, f"{name}.retry{MIGRATING}"):
            conn.default_channel.queue_delete(queue)
        conn.default_channel.exchange_delete(exchange.name)


def test_classic_queues_move_to_quorum_with_every_message_in_order(amqp_uri, scratch):
    name, exchange = scratch
    key = "migrating.happened"
    specs = specs_for(name, exchange, key)
    with Connection(amqp_uri, transport_options=CONFIRMED) as conn:
        exchange(conn.default_channel).declare()
        classic_consumer(conn, name, exchange, key)
        for n in range(200):
            publish_raw(amqp_uri, exchange, key, f'{{"n": {n}}}'.encode())
        producer = conn.Producer()
        # A delayed retry (1 h: it must not expire during the test) and a dead letter with its reason.
        producer.publish(b'{"retry": 1}', exchange="", routing_key=f"{name}.retry", expiration=3600,
                         headers={"x-ipv-retries": 2}, content_type="application/json", content_encoding="utf-8")
        producer.publish(b"\xff not json", exchange="", routing_key=f"{name}.dlq", content_type="application/json",
                         content_encoding="binary", headers={"x-ipv-dead-reason": "malformed: not UTF-8"})
        assert [row[1] for row in plan(amqp_uri, specs)] == ["other"] * 3

        said = io.StringIO()
        moved = run(amqp_uri, specs, say=lambda line: print(line, file=said))
        assert moved == {name: 200, f"{name}.retry": 1, f"{name}.dlq": 1}, said.getvalue()
        assert all(is_declared_as(conn, spec) for spec in specs)
        for spec in specs:
            with pytest.raises(PreconditionFailed):   # and not classic any more
                conn.channel().queue_declare(spec.name, durable=True, auto_delete=False,
                                             arguments=dict(spec.arguments, **{"x-queue-type": "classic"}))
        assert queue_depth(conn, name + MIGRATING) is None

        publish_raw(amqp_uri, exchange, key, b'{"n": 200}')          # still bound
        eventually("201 messages in the queue", lambda: queue_depth(conn, name) >= 201, interval=0.05)
        assert [body for body, _ in get_all(conn, name)] == [f'{{"n": {n}}}'.encode() for n in range(201)]
        [(body, props)] = get_all(conn, f"{name}.retry")
        assert body == b'{"retry": 1}' and props["expiration"] == "3600000"
        # (x-delivery-count: the new quorum queue counting this delivery; 0, so not the old queue's)
        assert props["application_headers"] == {"x-ipv-retries": 2, "x-delivery-count": 0}
        [(body, props)] = get_all(conn, f"{name}.dlq")
        assert body == b"\xff not json" and props["application_headers"]["x-ipv-dead-reason"] == "malformed: not UTF-8"

        assert run(amqp_uri, specs) == {spec.name: 0 for spec in specs}      # a second run changes nothing


def test_a_move_a_crash_interrupted_is_finished_by_running_again(amqp_uri, scratch):
    name, exchange = scratch
    key = "migrating.happened"
    work = specs_for(name, exchange, key)[0]
    with Connection(amqp_uri) as conn:
        exchange(conn.default_channel).declare()
        classic_consumer(conn, name, exchange, key)
        for n in range(5):
            publish_raw(amqp_uri, exchange, key, f'{{"n": {n}}}'.encode())
        # As if the command died after emptying the classic queue into the temporary one and deleting it.
        from ipvkit import migrate_queues
        from nameko.amqp.publish import Publisher
        publisher = Publisher(amqp_uri, use_confirms=True, mandatory=True)
        conn.default_channel.queue_declare(name + MIGRATING, durable=True, auto_delete=False,
                                           arguments={"x-queue-type": "quorum"})
        migrate_queues._bind(conn, name + MIGRATING, work.bindings)
        migrate_queues._bind(conn, name, work.bindings, unbind=True)
        assert migrate_queues.move(conn, publisher, name, name + MIGRATING) == 5
        conn.default_channel.queue_delete(name)
        assert [r[1] for r in plan(amqp_uri, [work])] == ["absent"] and plan(amqp_uri, [work])[0][-1] is True

        assert migrate_one(conn, publisher, work, say=lambda _: None) == 5
        assert is_declared_as(conn, work) and queue_depth(conn, name + MIGRATING) is None
        assert [body for body, _ in get_all(conn, name)] == [f'{{"n": {n}}}'.encode() for n in range(5)]


def test_a_quorum_queue_moves_to_a_single_active_consumer_with_its_messages(amqp_uri, scratch):
    """audit.record as declared before 4 December 2026 (no single active consumer) to the code's, and back; a
    delayed retry, which would expire into the work queue while it moves, waits aside and comes back."""
    name, exchange = scratch
    key = "migrating.happened"
    before, after = consumer_queue_arguments(name), consumer_queue_arguments(name, single_active=True)
    specs = [Spec(name, after[name], [(exchange, key)]), Spec(f"{name}.retry", after[f"{name}.retry"]),
             Spec(f"{name}.dlq", after[f"{name}.dlq"])]
    with Connection(amqp_uri, transport_options=CONFIRMED) as conn:
        exchange(conn.default_channel).declare()
        for queue, arguments in before.items():
            Queue(queue, durable=True, queue_arguments=arguments)(conn.default_channel).declare()
        conn.default_channel.queue_bind(name, exchange.name, key)
        for n in range(5):
            publish_raw(amqp_uri, exchange, key, f'{{"n": {n}}}'.encode())
        conn.Producer().publish(b'{"retry": 1}', exchange="", routing_key=f"{name}.retry", expiration=3600,
                                headers={"x-ipv-retries": 1}, content_type="application/json")
        assert [r[1] for r in plan(amqp_uri, specs)] == ["other", "quorum", "quorum"]

        assert run(amqp_uri, specs, say=lambda _: None) == {name: 5, f"{name}.retry": 0, f"{name}.dlq": 0}
        assert all(is_declared_as(conn, spec) for spec in specs)
        assert consume_all(conn, name) == [f'{{"n": {n}}}'.encode() for n in range(5)]
        [(body, props)] = get_all(conn, f"{name}.retry")
        assert body == b'{"retry": 1}' and props["expiration"] == "3600000"
        assert props["application_headers"]["x-ipv-retries"] == 1
        assert queue_depth(conn, name + MIGRATING) is None and queue_depth(conn, f"{name}.retry{MIGRATING}") is None
        assert [spec.arguments.get("x-single-active-consumer") for spec in planned()
                if spec.name == "audit.record"] == [True]

        # And out of it again (a later change of its arguments): such a queue refuses basic.get.
        for n in range(3):
            publish_raw(amqp_uri, exchange, key, f'{{"n": {n}}}'.encode())
        back = Spec(name, before[name], [(exchange, key)])
        assert run(amqp_uri, [back], say=lambda _: None) == {name: 3}
        assert [body for body, _ in get_all(conn, name)] == [f'{{"n": {n}}}'.encode() for n in range(3)]


def test_it_refuses_while_a_service_still_consumes(amqp_uri, scratch):
    name, exchange = scratch
    specs = specs_for(name, exchange, "migrating.happened")
    with Connection(amqp_uri) as conn:
        exchange(conn.default_channel).declare()
        classic_consumer(conn, name, exchange, "migrating.happened")
        consumer = conn.channel()
        consumer.basic_consume(name, callback=lambda m: None)
        with pytest.raises(Refused, match="stop every service first"):
            run(amqp_uri, specs)
        consumer.close()
        assert [r[1] for r in plan(amqp_uri, specs)] == ["other"] * 3        # nothing was touched


def test_the_plan_names_every_queue_of_the_code(amqp_uri):
    names = [spec.name for spec in planned()]
    assert "audit.on_event" in names or any(n.startswith("audit.") for n in names)
    assert {"rpc-vouchers", "rpc-audit", "ipv.unrouted"} <= set(names)
    assert all(f"{n}.retry" in names and f"{n}.dlq" in names for n in names
               if not n.endswith((".retry", ".dlq")) and not n.startswith("rpc-") and n != "ipv.unrouted")
    out = io.StringIO()
    assert main(["--amqp-uri", amqp_uri, "plan"], out=out) == 0
    assert out.getvalue().startswith("queue") and "rpc-vouchers" in out.getvalue()
