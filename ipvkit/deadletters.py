"""Dead letters for ops: list what each consumer dead-lettered, and replay it.

    python -m ipvkit.deadletters list                 every consumer's DLQ with its count
    python -m ipvkit.deadletters list QUEUE [-n 20]   the dead letters of one queue, oldest first
    python -m ipvkit.deadletters replay QUEUE --id EVENT_ID | --all
    python -m ipvkit.deadletters replay ipv.unrouted --all   events published before their consumers existed

QUEUE is a consumer's queue (`enterprises.on_agency_standing`) or its DLQ (`….dlq`). The consumers are
found in the code: every `EventConsumer` entrypoint of every `services/*/service.py` `SERVICE`.
The broker is `$AMQP_URI` (`make deadletters` reads it from var/env) or `--amqp-uri`.

Listing is non-destructive: messages are fetched unacknowledged and go back to the queue, in order,
when the channel closes. A replay republishes a message to its work queue with the retry and
dead-letter headers removed, with publisher confirms and `mandatory`; only once the broker has
confirmed it is the dead letter acknowledged (removed). A replayed message that fails again is
dead-lettered again, so a replay can never lose anything; `--all` takes only the messages present
when it starts, so it cannot loop on a poison message that comes straight back.
"""
import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from kombu import Connection
from nameko.amqp.publish import Publisher, UndeliverableMessage
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from ipvkit.amqp import UNROUTED_QUEUE, events_exchange
from ipvkit.consumer import REASON_HEADER, RETRY_HEADER, EventConsumer

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
# Headers the consumer adds when it retries or dead-letters; a replay starts the message afresh.
DEAD_HEADERS = (RETRY_HEADER, REASON_HEADER, "x-ipv-dead-at", "x-ipv-queue",
                # ... and the broker, when it dead-lettered one itself (the work queue's delivery limit)
                "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                "x-delivery-count")
REPLAYS_HEADER = "x-ipv-replays"


def services():
    """{service name: service class} for every services/<name>/service.py that defines SERVICE."""
    found = {}
    for path in sorted(SERVICES_DIR.glob("*/service.py")):
        module = importlib.import_module(f"services.{path.parent.name}.service")
        cls = getattr(module, "SERVICE", None)
        if cls is not None:
            found[cls.name] = cls
    return found


def consumers(service_classes=None):
    """[(work queue name, service name, method name, EventConsumer)] of every event consumer."""
    found = []
    for name, cls in (service_classes or services()).items():
        for attr in sorted(dir(cls)):
            for ext in getattr(getattr(cls, attr, None), ENTRYPOINT_EXTENSIONS_ATTR, ()):
                if isinstance(ext, EventConsumer):
                    found.append((f"{name}.{attr}", name, attr, ext))
    return found


def work_queue_name(queue):
    return queue[:-len(".dlq")] if queue.endswith(".dlq") else queue


def queue_depth(conn, name):
    """Messages ready in a queue, or None if it does not exist."""
    channel = conn.channel()
    try:
        return channel.queue_declare(name, passive=True).message_count
    except Exception as exc:  # noqa: BLE001 - amqp raises NotFound (404) and closes the channel
        if getattr(exc, "code", None) == 404:
            return None
        raise
    finally:
        try:
            channel.close()
        except Exception:  # noqa: BLE001 - the broker already closed it after a 404
            pass


def describe(message):
    """What ops need to decide about one dead letter."""
    headers = message.headers or {}
    body = message.body
    death = (headers.get("x-death") or [{}])[0]
    broker_reason = f"broker: {death['reason']}" if death.get("reason") else "(none)"   # e.g. delivery_limit
    info = {"reason": headers.get(REASON_HEADER, broker_reason),
            "dead_at": headers.get("x-ipv-dead-at") or (str(death["time"]) if death.get("time") else None),
            "retries": headers.get(RETRY_HEADER, 0), "replays": headers.get(REPLAYS_HEADER, 0),
            "bytes": len(body), "event_id": None, "type": None, "first_bytes": body[:120]}
    try:
        event = json.loads(body)
        if isinstance(event, dict):
            info["event_id"], info["type"] = event.get("event_id"), event.get("type")
            info["producer"] = event.get("producer")
    except ValueError:
        pass  # malformed: the first bytes say what it was
    return info


def browse(amqp_uri, queue, limit=50):
    """Up to `limit` dead letters of `queue` (oldest first), left in the queue."""
    dlq = work_queue_name(queue) + ".dlq"
    with Connection(amqp_uri) as conn:
        depth = queue_depth(conn, dlq)
        if depth is None:
            raise LookupError(f"no queue {dlq} on this broker")
        channel = conn.channel()
        got = []
        try:
            for _ in range(min(depth, limit)):
                message = channel.basic_get(dlq, no_ack=False)
                if message is None:
                    break
                got.append(describe(_Message(message)))
        finally:
            channel.close()  # every message fetched unacknowledged goes back, in order
        return depth, got


class _Message:
    """The few fields of a raw amqp message that `describe` and `replay` read."""

    def __init__(self, raw):
        self.headers = raw.properties.get("application_headers") or {}
        self.content_type = raw.properties.get("content_type")
        self.content_encoding = raw.properties.get("content_encoding")
        # py-amqp decodes a body it can decode with its declared encoding: back to the wire bytes.
        self.body = raw.body.encode(self.content_encoding or "utf-8") if isinstance(raw.body, str) else raw.body
        self.delivery_tag = raw.delivery_info["delivery_tag"]


def replay(amqp_uri, queue, event_id=None, everything=False):
    """Moves matching dead letters back to the work queue, or, for `ipv.unrouted`, events published
    before any queue was bound for them back to their producer's exchange (consumers apply an event
    once, so one that already reached them is skipped). Returns (replayed, how many of those present
    at the start were left)."""
    if not everything and not event_id:
        raise ValueError("say which: an event id, or everything")
    publisher = Publisher(amqp_uri, use_confirms=True, mandatory=True)
    with Connection(amqp_uri) as conn:
        if queue == UNROUTED_QUEUE.name:
            source = queue

            def target(info):
                producer, type_ = info.get("producer"), info.get("type")
                if not producer or not type_:
                    return None  # not an event: nothing to route by; it stays
                return events_exchange(producer).name, type_
        else:
            work = work_queue_name(queue)
            source = work + ".dlq"
            if queue_depth(conn, work) is None:
                raise LookupError(f"no work queue {work}: start its service once, then replay")

            def target(info):
                return "", work
        depth = queue_depth(conn, source)
        if depth is None:
            raise LookupError(f"no queue {source} on this broker")
        channel = conn.channel()
        replayed = 0
        try:
            for _ in range(depth):  # only what was there at the start: a poison comes straight back
                raw = channel.basic_get(source, no_ack=False)
                if raw is None:
                    break
                message = _Message(raw)
                info = describe(message)
                route = target(info)
                if route is None or (not everything and info["event_id"] != event_id):
                    continue  # not acknowledged: it goes back when the channel closes
                headers = {k: v for k, v in message.headers.items() if k not in DEAD_HEADERS}
                headers[REPLAYS_HEADER] = int(message.headers.get(REPLAYS_HEADER, 0)) + 1
                # Raises unless the broker confirmed it; the message is then left where it is. An
                # unrouted event still without a queue comes back to ipv.unrouted through the
                # exchange's alternate exchange, so it is kept.
                publisher.publish(message.body, exchange=route[0], routing_key=route[1], headers=headers,
                                  serializer=None, content_type=message.content_type or "application/json",
                                  content_encoding=message.content_encoding or "utf-8")
                channel.basic_ack(message.delivery_tag)
                replayed += 1
        except UndeliverableMessage:
            raise LookupError(f"the broker could not route a message from {source}; nothing more was replayed")
        finally:
            channel.close()
        # Not a new count: a replayed poison may already be back, and it is not "left".
        return replayed, depth - replayed


# -- the command line --------------------------------------------------------------------------
def _print_overview(amqp_uri, out):
    rows = []
    with Connection(amqp_uri) as conn:
        for work, _, _, _ in consumers():
            rows.append((work + ".dlq", queue_depth(conn, work + ".dlq"), queue_depth(conn, work)))
        rows.append((UNROUTED_QUEUE.name, queue_depth(conn, UNROUTED_QUEUE.name), None))
    width = max(len(r[0]) for r in rows)
    print(f"{'queue':<{width}}  {'dead':>6}  {'waiting':>7}", file=out)
    for name, dead, waiting in rows:
        dead = "-" if dead is None else dead  # not declared yet: its service never started here
        waiting = "" if waiting is None else waiting
        print(f"{name:<{width}}  {dead:>6}  {waiting:>7}", file=out)
    print(f"({UNROUTED_QUEUE.name} holds events published before any queue was bound for them)", file=out)


def _print_queue(amqp_uri, queue, limit, out):
    depth, letters = browse(amqp_uri, queue, limit)
    print(f"{work_queue_name(queue)}.dlq: {depth} dead letter(s)"
          + (f", showing the first {len(letters)}" if len(letters) < depth else ""), file=out)
    for n, info in enumerate(letters, 1):
        what = f"{info['type']} {info['event_id']}" if info["event_id"] else "(no event id)"
        print(f"#{n} {what}  dead at {info['dead_at']}  retries {info['retries']}  replays {info['replays']}"
              f"  {info['bytes']} bytes", file=out)
        print(f"   reason: {info['reason']}", file=out)
        print(f"   first bytes: {info['first_bytes']!r}", file=out)


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m ipvkit.deadletters", description=__doc__.split("\n")[0])
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI"), help="default: $AMQP_URI")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("list", help="counts per queue, or one queue's dead letters")
    show.add_argument("queue", nargs="?")
    show.add_argument("-n", "--limit", type=int, default=50)
    again = sub.add_parser("replay", help="republish dead letters to their work queue")
    again.add_argument("queue")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="event_id")
    which.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    if not args.amqp_uri:
        parser.error("no broker: set AMQP_URI or pass --amqp-uri")
    try:
        if args.command == "list" and args.queue is None:
            _print_overview(args.amqp_uri, out)
        elif args.command == "list":
            _print_queue(args.amqp_uri, args.queue, args.limit, out)
        else:
            done, left = replay(args.amqp_uri, args.queue, args.event_id, args.all)
            if args.event_id and not done:
                print(f"no dead letter with event id {args.event_id} in {work_queue_name(args.queue)}.dlq",
                      file=out)
                return 1
            if args.queue == UNROUTED_QUEUE.name:
                print(f"replayed {done} to their producers' exchanges; {left} others left in {args.queue}", file=out)
            else:
                print(f"replayed {done} to {work_queue_name(args.queue)}; {left} others left in the DLQ", file=out)
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
