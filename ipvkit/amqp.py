"""Exchange and queue definitions, in one place: a queue's or exchange's arguments cannot change
after it is first declared, and every declarer must use the same ones."""
from kombu import Exchange, Queue

UNROUTED_EXCHANGE = Exchange("ipv.unrouted", type="fanout", durable=True)
# Events no queue was bound for yet (e.g. published before a new consumer's first start) land
# here instead of vanishing; ops can replay them.
UNROUTED_QUEUE = Queue("ipv.unrouted", exchange=UNROUTED_EXCHANGE, durable=True,
                       queue_arguments={"x-queue-type": "classic"})


def events_exchange(producer):
    # nameko's own naming (`<service>.events`, topic), so nameko's @event_handler could read it too.
    return Exchange(f"{producer}.events", type="topic", durable=True,
                    arguments={"alternate-exchange": UNROUTED_EXCHANGE.name})


def consumer_queues(name, bindings):
    """The work queue of one consumer, bound to (exchange, pattern) pairs, and its dead-letter
    queue. Retries are republished to the work queue through the default exchange with a delay
    queue `<name>.retry` whose expired messages dead-letter back to the work queue."""
    from kombu import binding
    work = Queue(name, bindings=[binding(ex, routing_key=key) for ex, key in bindings], durable=True,
                 queue_arguments={"x-queue-type": "classic"})
    retry = Queue(f"{name}.retry", durable=True, queue_arguments={
        "x-queue-type": "classic", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": name})
    dead = Queue(f"{name}.dlq", durable=True, queue_arguments={"x-queue-type": "classic"})
    return work, retry, dead
