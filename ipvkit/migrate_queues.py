"""Moves an installation's queues to the type and arguments the code declares (classic queues to quorum
queues; `audit.record` to a single active consumer), losing nothing.

    python -m ipvkit.migrate_queues plan       what would move: each queue, its type now, messages waiting
    python -m ipvkit.migrate_queues run        move them (`make migrate-queues`)

A queue's type and arguments cannot change once declared, and a service declaring its queues as quorum
queues on a broker that has them as classic ones is refused (PRECONDITION_FAILED, inequivalent arg
'x-queue-type'; the same for any other argument). So, with every service stopped (the command refuses
while a queue has consumers), for each queue Q of the code declared otherwise (every consumer's work,
retry and dead-letter queue, every `rpc-<service>` queue, `ipv.unrouted`):

  1. a quorum queue `Q.migrating` is declared and bound as Q is, then Q unbound: from here on a
     publish lands in the new queue, never nowhere;
  2. every message of Q is moved into it (published with confirms and `mandatory`, then
     acknowledged: at least once, in order, body, headers and properties kept), then Q is deleted
     once empty (a work queue's delayed retries, which expire into it by name, wait aside meanwhile);
  3. Q is declared as the code declares it (quorum) and bound, `Q.migrating` unbound, its messages
     moved into Q, and it is deleted.

Every step can be run again: after a crash, `run` again picks up where it stopped (a `Q.migrating`
that exists is finished). A crash between a publish and its ack can leave one message in both
places; consumers apply an event once (event ids), so that costs nothing. A delayed retry's
`expiration` is kept aside in a header while it waits in `Q.migrating` (which has no dead-letter
target) and restored when it reaches the new retry queue.

The broker is `$AMQP_URI` or `--amqp-uri`; with a cluster's list of URIs any live node will do.
"""
import argparse
import os
import socket
import sys

from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Connection
from nameko.amqp.publish import Publisher
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from nameko.rpc import get_rpc_exchange

from ipvkit.amqp import (QUORUM, UNROUTED_EXCHANGE, UNROUTED_QUEUE, consumer_queue_arguments, events_exchange,
                         rpc_queue_arguments)

MIGRATING = ".migrating"
KEPT_EXPIRATION = "x-ipv-moved-expiration"
PROPERTIES = ("content_type", "content_encoding", "correlation_id", "reply_to", "message_id", "timestamp",
              "type", "app_id", "priority")   # not user_id: the broker refuses one that is not the publisher's


class Refused(Exception):
    pass


class Spec:
    """One queue as the code declares it: name, arguments, [(exchange, routing key)]."""

    def __init__(self, name, arguments, bindings=()):
        self.name, self.arguments, self.bindings = name, dict(arguments), list(bindings)

    def __repr__(self):
        return f"Spec({self.name!r})"


def planned(service_classes=None):
    """The Spec of every queue the code declares, work queues before their retry and dead-letter queues."""
    from ipvkit.deadletters import consumers, services
    from ipvkit.rpc import QuorumRpc
    classes = service_classes or services()
    specs = []
    for work, _, _, consumer in consumers(classes):
        arguments = consumer_queue_arguments(work, consumer.single_active)
        bindings = [(events_exchange(src), key) for src, key in consumer.bindings]
        specs += [Spec(work, arguments[work], bindings), Spec(f"{work}.retry", arguments[f"{work}.retry"]),
                  Spec(f"{work}.dlq", arguments[f"{work}.dlq"])]
    rpc_exchange = get_rpc_exchange({})   # nameko's default, `nameko-rpc`: the services set no other
    for name, cls in sorted(classes.items()):
        if any(isinstance(ext, QuorumRpc) for attr in dir(cls)
               for ext in getattr(getattr(cls, attr, None), ENTRYPOINT_EXTENSIONS_ATTR, ())):
            specs.append(Spec(f"rpc-{name}", rpc_queue_arguments(), [(rpc_exchange, f"{name}.*")]))
    specs.append(Spec(UNROUTED_QUEUE.name, UNROUTED_QUEUE.queue_arguments, [(UNROUTED_EXCHANGE, "")]))
    return specs


def _channel_call(conn, fn):
    """fn(channel) on a channel of its own (a refused declare closes the channel it was made on)."""
    channel = conn.channel()
    try:
        return fn(channel)
    finally:
        if channel.is_open:
            channel.close()


def state(conn, spec):
    """(kind, messages, consumers) of a queue: kind is 'absent', 'quorum' (declared as the code says) or
    'other' (classic, or quorum with other arguments)."""
    try:
        ok = _channel_call(conn, lambda ch: ch.queue_declare(spec.name, passive=True))
    except NotFound:
        return "absent", 0, 0
    try:
        _channel_call(conn, lambda ch: ch.queue_declare(spec.name, durable=True, auto_delete=False,
                                                        arguments=spec.arguments))
        return "quorum", ok.message_count, ok.consumer_count
    except PreconditionFailed:
        return "other", ok.message_count, ok.consumer_count


def _exists(conn, name):
    try:
        _channel_call(conn, lambda ch: ch.queue_declare(name, passive=True))
        return True
    except NotFound:
        return False


def _bind(conn, name, bindings, unbind=False):
    def run(ch):
        for exchange, key in bindings:
            exchange(ch).declare()   # an exchange nothing declared yet (a producer never started here)
            (ch.queue_unbind if unbind else ch.queue_bind)(name, exchange.name, key)
    _channel_call(conn, run)


def _delivered(conn, channel, source, waiting):
    """The `waiting` messages of `source`, one at a time, by a consumer: a queue with a single active consumer
    refuses basic.get. Each must be acknowledged before the next comes (prefetch 1). Ends early if the queue
    runs out (nothing ready for a second); one delivered and not acknowledged then returns to the queue, and
    the caller's next pass takes it."""
    if not waiting:
        return   # no consumer to subscribe and cancel for nothing
    arrived = []
    channel.basic_qos(0, 1, False)
    tag = channel.basic_consume(source, no_ack=False, callback=arrived.append)
    try:
        while waiting:
            if arrived:
                waiting -= 1
                yield arrived.pop(0)
                continue
            try:
                conn.drain_events(timeout=1)
            except socket.timeout:
                if not channel.queue_declare(source, passive=True).message_count:
                    return
    finally:
        channel.basic_cancel(tag)


def move(conn, publisher, source, target, restore_expiration=False):
    """Every message of `source` into `target`, in order, each acknowledged only once the broker confirmed
    it in `target`. Returns how many."""
    moved, channel = 0, conn.channel()
    try:
        for raw in _delivered(conn, channel, source, channel.queue_declare(source, passive=True).message_count):
            props = raw.properties
            headers = dict(props.get("application_headers") or {})
            headers.pop("x-delivery-count", None)   # the source quorum queue's own count, not the message's
            expiration = props.get("expiration")
            if restore_expiration:
                expiration = headers.pop(KEPT_EXPIRATION, expiration)
            elif expiration is not None:
                headers[KEPT_EXPIRATION] = expiration   # no dead-letter target in `.migrating`: keep it aside
                expiration = None
            body = raw.body
            if isinstance(body, str):   # py-amqp decoded it: back to the wire bytes
                body = body.encode(props.get("content_encoding") or "utf-8")
            extra = {k: props[k] for k in PROPERTIES if props.get(k) is not None and k not in
                     ("content_type", "content_encoding")}
            if expiration is not None:
                extra["expiration"] = int(expiration) / 1000   # AMQP carries ms as text; kombu takes seconds
            publisher.publish(body, exchange="", routing_key=target, headers=headers, serializer=None,
                              content_type=props.get("content_type") or "application/octet-stream",
                              content_encoding=props.get("content_encoding") or "binary",
                              delivery_mode=2, **extra)
            channel.basic_ack(raw.delivery_tag)
            moved += 1
    finally:
        channel.close()
    return moved


def _empty_and_delete(conn, publisher, source, target, restore_expiration=False):
    """Moves every message of `source` into `target`, then deletes `source`. Nothing routes to it any more
    (unbound, no consumer, its retries parked), so empty stays empty; a straggler (a dead letter replayed
    meanwhile) moves too. Not an `if-empty` delete: a quorum queue refuses one, closing the connection."""
    moved = move(conn, publisher, source, target, restore_expiration)
    while _channel_call(conn, lambda ch: ch.queue_declare(source, passive=True)).message_count:
        moved += move(conn, publisher, source, target, restore_expiration)
    _channel_call(conn, lambda ch: ch.queue_delete(source))
    return moved


def _park_retries(conn, publisher, name):
    """A work queue's delayed retries expire into it by name, bound or not: they wait in `<name>.retry.migrating`
    (no dead-letter target) while it moves, and go back once it has (or, after a crash, when the command
    reaches `<name>.retry`: an unfinished move)."""
    retry = f"{name}.retry"
    if not _exists(conn, retry):
        return
    park = retry + MIGRATING
    _channel_call(conn, lambda ch: ch.queue_declare(park, durable=True, auto_delete=False, arguments=dict(QUORUM)))
    move(conn, publisher, retry, park)


def migrate_one(conn, publisher, spec, say=print):
    """Moves one queue to quorum, as the code declares it (idempotent; finishes a move a crash interrupted).
    Returns how many messages it put into the new queue."""
    temp = spec.name + MIGRATING
    kind, waiting, consumers = state(conn, spec)
    if consumers:
        raise Refused(f"{spec.name} has {consumers} consumer(s): stop every service first")
    if kind == "quorum" and not _exists(conn, temp):
        return 0
    moved = 0
    if kind == "other":
        _park_retries(conn, publisher, spec.name)
        _channel_call(conn, lambda ch: ch.queue_declare(temp, durable=True, auto_delete=False,
                                                        arguments=dict(QUORUM)))
        _bind(conn, temp, spec.bindings)
        _bind(conn, spec.name, spec.bindings, unbind=True)
        _empty_and_delete(conn, publisher, spec.name, temp)
        kind = "absent"
    if kind == "absent" and not _exists(conn, temp):
        return 0   # never declared here: its service declares it when it first starts
    if kind == "absent":
        _channel_call(conn, lambda ch: ch.queue_declare(spec.name, durable=True, auto_delete=False,
                                                        arguments=spec.arguments))
    _bind(conn, spec.name, spec.bindings)
    _bind(conn, temp, spec.bindings, unbind=True)
    moved += _empty_and_delete(conn, publisher, temp, spec.name, restore_expiration=True)
    parked = f"{spec.name}.retry{MIGRATING}"
    if _exists(conn, parked):
        _empty_and_delete(conn, publisher, parked, f"{spec.name}.retry", restore_expiration=True)
    say(f"{spec.name}: quorum queue now, {waiting} message(s) were waiting, {moved} moved")
    return moved


def run(amqp_uri, specs=None, say=print):
    specs = planned() if specs is None else specs
    publisher = Publisher(amqp_uri, use_confirms=True, mandatory=True)
    with Connection(amqp_uri) as conn:
        busy = [(s.name, n) for s in specs for kind, _, n in [state(conn, s)] if n]
        if busy:
            raise Refused(f"queues with consumers: {busy}; stop every service first (nothing was moved)")
        return {spec.name: migrate_one(conn, publisher, spec, say) for spec in specs}


def plan(amqp_uri, specs=None):
    specs = planned() if specs is None else specs
    with Connection(amqp_uri) as conn:
        return [(spec.name, *state(conn, spec), _exists(conn, spec.name + MIGRATING)) for spec in specs]


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m ipvkit.migrate_queues", description=__doc__.split("\n")[0])
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI"), help="default: $AMQP_URI")
    parser.add_argument("command", choices=("plan", "run"))
    parser.add_argument("--quiet", action="store_true", help="say nothing when nothing had to move")
    args = parser.parse_args(argv)
    if not args.amqp_uri:
        parser.error("no broker: set AMQP_URI or pass --amqp-uri")
    if args.command == "plan":
        rows = plan(args.amqp_uri)
        width = max(len(r[0]) for r in rows)
        print(f"{'queue':<{width}}  {'now':<8}  {'waiting':>7}  to do", file=out)
        for name, kind, waiting, _, unfinished in rows:
            todo = ("finish the move" if unfinished else "move to quorum, as declared" if kind == "other" else "-")
            now = {"other": "other", "quorum": "quorum", "absent": "absent"}[kind]
            print(f"{name:<{width}}  {now:<8}  {waiting:>7}  {todo}", file=out)
        return 0
    moved_any = [False]

    def say(line):
        moved_any[0] = True
        print(line, file=out)
    try:
        moved = run(args.amqp_uri, say=say)
    except Refused as exc:
        print(f"error: {exc}", file=out)
        return 1
    if moved_any[0] or not args.quiet:
        print(f"done: every queue is a quorum queue, as declared; {sum(moved.values())} message(s) moved", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
