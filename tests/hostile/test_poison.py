"""Poison messages on every consumer queue the code declares: each is dead-lettered at once with
its reason, unchanged; no handler ever sees one; a valid event sent after them is still applied."""
import json
import re
from datetime import datetime, timezone

import pytest
from kombu import Connection
from nameko.testing.services import entrypoint_waiter

from ipvkit.consumer import Permanent
from ipvkit.deadletters import queue_depth
from ipvkit.events import MAX_EVENT_BYTES, MalformedEvent, _registry, new_event, parse
from tests.conftest import CONFIRMED
from tests.hostile.conftest import CONSUMERS, drain, purge
from tests.hostile.profiles import SAMPLES, Seed, example, profile

pytestmark = pytest.mark.integration


def topic_matches(pattern, key):
    regex = re.escape(pattern).replace(r"\*", r"[^.]+").replace(r"\#", r".*")
    return re.fullmatch(regex, key) is not None


def valid_event(consumer, seed):
    """A valid event of a type the consumer is bound to: a written sample if there is one."""
    types = sorted({(t, v) for t, v in _registry for src, pattern in consumer.bindings
                    if topic_matches(pattern, t)}, key=lambda tv: (tv[0] not in SAMPLES, tv))
    assert types, f"{consumer.bindings} matches no registered event type"
    event_type, version = types[0]
    curated = event_type in SAMPLES
    data = SAMPLES[event_type](seed) if curated else example(_registry[(event_type, version)])
    producer = next(src for src, pattern in consumer.bindings if topic_matches(pattern, event_type))
    event = new_event(type=event_type, version=version, producer=producer, aggregate_id="poison-test", sequence=1,
                      data=data, actor={"role": "officer", "id": "o9"}, now=datetime.now(timezone.utc))
    return event, curated


def poisons(event):
    wrong_types = dict(event, data={k: {"wrong": ["type"]} for k in event["data"]})
    oversized = dict(event, data=dict(event["data"], padding="x" * MAX_EVENT_BYTES))
    cases = [
        ("not JSON", b'{"event_id": "1", "type": '),
        ("unknown event type", json.dumps(dict(event, type="nobody.knows", data={})).encode()),
        ("unknown version 99", json.dumps(dict(event, version=99)).encode()),
        (f"bad {event['type']} v{event['version']} data", json.dumps(wrong_types).encode()),
        (f"exceeds {MAX_EVENT_BYTES}", json.dumps(oversized).encode()),
        ("more than 32 deep", json.dumps(event).encode()[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("more than once", json.dumps(event).encode()[:-1] + b', "type": "nobody.knows"}'),
        ("lone surrogate", json.dumps(dict(event, aggregate_id="\ud800")).encode()),
        ("control character", json.dumps(dict(event, producer="vouch\u202eers")).encode()),
    ]
    for _, body in cases:  # each really is malformed, so the test cannot pass by accident
        with pytest.raises(MalformedEvent):
            parse(body)
    return cases


@pytest.mark.parametrize("queue,service,method,consumer", CONSUMERS, ids=[c[0] for c in CONSUMERS])
def test_poison_is_dead_lettered_with_its_reason_and_the_consumer_keeps_going(
        start_service, amqp_uri, queue, service, method, consumer):
    purge(amqp_uri, queue)
    container, client = start_service(service)
    seed_fn = profile(service).seed
    seed = seed_fn(client) if seed_fn else Seed()
    drain(amqp_uri, queue + ".dlq")
    event, curated = valid_event(consumer, seed)
    cases = poisons(event)

    handled = []

    def valid_one_done(worker_ctx, result, exc_info):
        handled.append((worker_ctx.args[0]["event_id"], exc_info))
        return worker_ctx.args[0]["event_id"] == event["event_id"]

    # Generous: a loaded machine makes this slower, not red. A timeout says what had arrived by then.
    try:
        with entrypoint_waiter(container, method, callback=valid_one_done, timeout=120):
            with Connection(amqp_uri, transport_options=CONFIRMED) as conn:
                producer = conn.Producer()
                for _, body in cases + [("valid", json.dumps(event).encode())]:
                    producer.publish(body, exchange="", routing_key=queue, content_type="application/json",
                                     content_encoding="utf-8")
    except entrypoint_waiter.Timeout:
        with Connection(amqp_uri) as conn:
            channel = conn.channel()
            _, ready, consumers = channel.queue_declare(queue, passive=True)
            channel.close()
            dead_letters = queue_depth(conn, queue + ".dlq")
        raise AssertionError(f"the valid event was not handled: handled {handled}; {queue} holds {ready} "
                             f"ready with {consumers} consumers, its dead-letter queue {dead_letters}") from None

    # No handler saw a poison: each carries the valid event's id or none. Other events may come by (the
    # seed's own, published at least once), so the valid one is looked for, not assumed alone.
    assert [event_id for event_id, _ in handled].count(event["event_id"]) == 1, handled
    outcome = next(exc for event_id, exc in handled if event_id == event["event_id"])
    if curated:
        assert outcome is None, f"the valid {event['type']} event failed: {outcome}"
    else:   # a generated event may break a business rule; it must still reach the handler
        assert outcome is None or isinstance(outcome[1], Permanent), outcome
    dead = [m for m in drain(amqp_uri, queue + ".dlq") if not m.headers["x-ipv-dead-reason"].startswith("rejected")]
    assert [m.body for m in dead] == [body for _, body in cases]           # nothing lost, nothing changed
    for (reason, _), message in zip(cases, dead):
        assert message.headers["x-ipv-dead-reason"].startswith("malformed: ")
        assert reason in message.headers["x-ipv-dead-reason"], message.headers["x-ipv-dead-reason"]
        assert message.headers["x-ipv-queue"] == queue
    with Connection(amqp_uri) as conn:
        assert queue_depth(conn, queue) == 0
