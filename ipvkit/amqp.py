"""Exchange and queue definitions, in one place: a queue's or exchange's arguments cannot change
after it is first declared, and every declarer must use the same ones.

Every durable queue is a quorum queue (replicated on every node of the cluster; on one node it is
simply a durable queue with a Raft log). A queue's type cannot change once declared: an
installation that started on classic queues moves with `python -m ipvkit.migrate_queues`
(docs/operations.md, "Moving to quorum queues"). What RabbitMQ 3.10.8 does with quorum queues,
measured on Debian's package (docs/operations.md says how):
- per-message TTL (`expiration`) works, and an expired message is dead-lettered with its `x-death`
  record, in queue order (a short delay behind a long one waits for it, as on a classic queue);
- `x-dead-letter-strategy: at-least-once` (it requires `x-overflow: reject-publish`) keeps a
  dead-lettered message in its source queue until the target queue confirmed it: with the target
  missing it arrived ~3 min later (the broker's retry interval) once the target existed, where
  at-most-once had dropped it;
- `x-delivery-limit` dead-letters a message after that many returns to the queue.
"""
from kombu import Exchange, Queue

QUORUM = {"x-queue-type": "quorum"}
# A message handed to a consumer and returned this many times (the consumer's connection died, or its
# process, each time) is dead-lettered by the broker instead of crash-looping every pod. Handler
# failures never count here: the consumer retries those itself through the retry queue. Generous, so
# that restarts and failovers (each returns what a consumer held) never reach it.
DELIVERY_LIMIT = 50

UNROUTED_EXCHANGE = Exchange("ipv.unrouted", type="fanout", durable=True)
# Events no queue was bound for yet (e.g. published before a new consumer's first start) land
# here instead of vanishing; ops can replay them.
UNROUTED_QUEUE = Queue("ipv.unrouted", exchange=UNROUTED_EXCHANGE, durable=True, queue_arguments=dict(QUORUM))


def events_exchange(producer):
    # nameko's own naming (`<service>.events`, topic), so nameko's @event_handler could read it too.
    return Exchange(f"{producer}.events", type="topic", durable=True,
                    arguments={"alternate-exchange": UNROUTED_EXCHANGE.name})


def dead_letters_to(queue_name):
    """Broker-side dead-lettering into `queue_name` through the default exchange, at least once."""
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue_name,
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def consumer_queue_arguments(name, single_active=False):
    """{queue name: arguments} of one consumer's three queues (the migration reads them too).
    `single_active`: the broker delivers the work queue to one consumer at a time, in queue order; the
    other pods' consumers wait, and the longest-waiting one takes over when the active one's channel closes."""
    work = dict(QUORUM, **{"x-delivery-limit": DELIVERY_LIMIT}, **dead_letters_to(f"{name}.dlq"))
    if single_active:
        work["x-single-active-consumer"] = True
    return {
        name: work,
        f"{name}.retry": dict(QUORUM, **dead_letters_to(name)),
        f"{name}.dlq": dict(QUORUM),
    }


def consumer_queues(name, bindings, single_active=False):
    """The work queue of one consumer, bound to (exchange, pattern) pairs, and its dead-letter
    queue. Retries are republished to the work queue through the default exchange with a delay
    queue `<name>.retry` whose expired messages dead-letter back to the work queue."""
    from kombu import binding
    arguments = consumer_queue_arguments(name, single_active)
    work = Queue(name, bindings=[binding(ex, routing_key=key) for ex, key in bindings], durable=True,
                 queue_arguments=arguments[name])
    retry = Queue(f"{name}.retry", durable=True, queue_arguments=arguments[f"{name}.retry"])
    dead = Queue(f"{name}.dlq", durable=True, queue_arguments=arguments[f"{name}.dlq"])
    return work, retry, dead


def rpc_queue_arguments():
    """nameko's `rpc-<service>` request queue is durable and shared by the service's pods: a classic one
    lives on one node, and while that node is down no pod can consume it (its redeclare fails with
    'home node down') and every RPC to the service fails. A quorum one fails over with the rest.
    nameko's reply queues (`rpc.reply-…`) are exclusive and auto-delete, which a quorum queue cannot
    be: they stay classic, and a caller whose node died reconnects with a new one (its in-flight
    call times out, which ipvkit.rpc turns into a 503)."""
    return dict(QUORUM)
