"""Classic queues on one RabbitMQ node vs quorum queues on a three-node cluster, side by side in one run.

    make bench BENCH=brokers [BENCH_ARGS="--messages 4000 --publishers 4"]

Each broker is a private one (tests/faults/harness.py: scripts/stack.sh on free ports, data under
var/faults/), started for the run and stopped after it: first a single node with the queues as
ipvkit/amqp.py declared them before (classic), then a three-node cluster with them as it declares
them now (quorum, replicated on the three). On each, the event path the services use:

1. publish: `--messages` events to a producer's topic exchange bound to one consumer's work queue,
   the way the outbox relay does (persistent, publisher confirms, `mandatory`, each publish waiting
   for its confirm), from `--publishers` connections at once; publishes/s and each publish's latency;
2. consume: the queue drained by one consumer with the services' prefetch (10), acknowledging each
   message; messages/s;
3. end to end: `--messages` / 4 events published one at a time while the consumer runs; the time from
   publish to the consumer having it, p50 and p99;
4. RPC: nameko's `rpc-<service>` request queue (classic vs quorum) under a bare echo service:
   round trips of one caller.

Counts, not durations, drive it: every stage stops when its count is reached (and fails, saying so, if a
stage makes no progress for a minute). On the quorum cluster every client connects to the first node,
so that node leads the queues, as it does when every service lists the nodes in the same order.
"""
import eventlet

eventlet.monkey_patch()   # the RPC stage hosts a nameko service in this process  # noqa: E402

import argparse  # noqa: E402
import json
import os
import statistics
import sys
import threading
import time
import uuid

from kombu import Connection, Exchange, Queue, binding

from ipvkit.amqp import consumer_queues, events_exchange

STALL_S = 60


def classic_consumer_queues(name, bindings):
    """ipvkit/amqp.py's queues before quorum queues (main at b2bde16)."""
    work = Queue(name, bindings=[binding(ex, routing_key=key) for ex, key in bindings], durable=True,
                 queue_arguments={"x-queue-type": "classic"})
    retry = Queue(f"{name}.retry", durable=True, queue_arguments={
        "x-queue-type": "classic", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": name})
    dead = Queue(f"{name}.dlq", durable=True, queue_arguments={"x-queue-type": "classic"})
    return work, retry, dead


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] if ordered else float("nan")


def publish_many(uri, exchange, count, results, stamp=False):
    body = json.dumps({"event_id": "x", "type": "bench.happened", "data": {"pad": "x" * 400}})
    with Connection(uri, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        for _ in range(count):
            started = time.perf_counter()
            payload = json.dumps({"sent": time.time()}) if stamp else body
            producer.publish(payload, exchange=exchange, routing_key="bench.happened", delivery_mode=2,
                             mandatory=True, content_type="application/json", retry=True)
            results.append(time.perf_counter() - started)


def drain(uri, queue_name, count, latencies=None):
    """Consumes `count` messages with prefetch 10, acking each; returns seconds taken."""
    got, last_progress = [0], [time.monotonic()]

    def on_message(body, message):
        if latencies is not None:
            latencies.append(time.time() - (body if isinstance(body, dict) else json.loads(body))["sent"])
        message.ack()
        got[0] += 1
        last_progress[0] = time.monotonic()

    started = time.perf_counter()
    with Connection(uri) as conn:
        queue = Queue(queue_name, no_declare=True)
        with conn.Consumer([queue], callbacks=[on_message], prefetch_count=10, accept=["json"]):
            while got[0] < count:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
                if time.monotonic() - last_progress[0] > STALL_S:
                    raise SystemExit(f"consumer stalled at {got[0]} of {count} messages on {queue_name}")
    return time.perf_counter() - started


def rpc_round_trips(uri, count, queue_arguments):
    """A bare echo over nameko's RPC with its request queue declared with `queue_arguments`."""
    from nameko.containers import ServiceContainer
    from nameko.rpc import Rpc, RpcConsumer, rpc
    from nameko.standalone.rpc import ClusterRpcProxy

    class Consumer(RpcConsumer):
        def setup(self):
            super().setup()
            self.queue.queue_arguments = dict(queue_arguments)

    class BenchRpc(Rpc):
        rpc_consumer = Consumer()

    class Echo:
        name = f"bench_echo_{uuid.uuid4().hex[:6]}"

        @BenchRpc.decorator
        def echo(self, x):
            return x

    container = ServiceContainer(Echo, {"AMQP_URI": uri})
    container.start()
    try:
        times = []
        with ClusterRpcProxy({"AMQP_URI": uri}, timeout=30) as proxy:
            service = getattr(proxy, Echo.name)
            service.echo(0)
            for n in range(count):
                started = time.perf_counter()
                service.echo(n)
                times.append(time.perf_counter() - started)
        return times
    finally:
        container.stop()


def measure(label, stack, queues_for, rpc_arguments, args):
    first = stack.amqp_uri.split(";")[0]
    name = f"bench.{uuid.uuid4().hex[:6]}"
    exchange = events_exchange("benchproducer")
    with Connection(first) as conn:
        exchange(conn.default_channel).declare()
        for queue in queues_for(name, [(exchange, "bench.*")]):
            queue(conn.default_channel).declare()
    # 1. publish from several connections at once
    per, latencies, threads = args.messages // args.publishers, [], []
    started = time.perf_counter()
    for _ in range(args.publishers):
        results = []
        latencies.append(results)
        threads.append(threading.Thread(target=publish_many, args=(first, exchange, per, results)))
        threads[-1].start()
    for thread in threads:
        thread.join()
    publish_s = time.perf_counter() - started
    published = [x for part in latencies for x in part]
    if len(published) != per * args.publishers:
        raise SystemExit(f"{label}: {len(published)} of {per * args.publishers} publishes confirmed")
    # 2. drain
    consume_s = drain(first, name, len(published))
    # 3. end to end, one publisher and the consumer at once
    e2e, sent = [], []
    count = max(args.messages // 4, 1)
    consumer = threading.Thread(target=lambda: drain(first, name, count, e2e))
    consumer.start()
    publish_many(first, exchange, count, sent, stamp=True)
    consumer.join()
    if len(e2e) != count:
        raise SystemExit(f"{label}: the consumer got {len(e2e)} of {count} events published one at a time")
    # 4. RPC
    rpc = rpc_round_trips(first, args.rpc, rpc_arguments)
    return {"broker": label,
            "publish_per_s": len(published) / publish_s, "publish_p50_ms": pct(published, 50) * 1000,
            "publish_p99_ms": pct(published, 99) * 1000, "consume_per_s": len(published) / consume_s,
            "e2e_p50_ms": pct(e2e, 50) * 1000, "e2e_p99_ms": pct(e2e, 99) * 1000,
            "rpc_p50_ms": pct(rpc, 50) * 1000, "rpc_p99_ms": pct(rpc, 99) * 1000,
            "rpc_per_s": len(rpc) / sum(rpc)}


ROWS = [("events published/s (confirms, mandatory, persistent)", "publish_per_s", "{:.0f}"),
        ("  one publish, p50 ms", "publish_p50_ms", "{:.2f}"), ("  one publish, p99 ms", "publish_p99_ms", "{:.2f}"),
        ("events consumed and acked/s (prefetch 10)", "consume_per_s", "{:.0f}"),
        ("publish -> consumer, p50 ms", "e2e_p50_ms", "{:.2f}"), ("publish -> consumer, p99 ms", "e2e_p99_ms", "{:.2f}"),
        ("RPC round trips/s (one caller)", "rpc_per_s", "{:.0f}"),
        ("  one RPC, p50 ms", "rpc_p50_ms", "{:.2f}"), ("  one RPC, p99 ms", "rpc_p99_ms", "{:.2f}")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000, help="events published (and consumed) per broker")
    parser.add_argument("--publishers", type=int, default=4, help="publishing connections at once")
    parser.add_argument("--rpc", type=int, default=500, help="RPC round trips per broker")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    from tests.faults.harness import PrivateStack
    rows = []
    for label, nodes, queues_for, rpc_arguments in (
            ("classic, 1 node", 1, classic_consumer_queues, {}),
            ("quorum, 3 nodes", 3, consumer_queues, {"x-queue-type": "quorum"})):
        print(f"starting a private RabbitMQ: {label} ...", file=sys.stderr, flush=True)
        stack = PrivateStack.start(nodes)
        try:
            rows.append(measure(label, stack, queues_for, rpc_arguments, args))
        finally:
            stack.stop()
    width = max(len(r[0]) for r in ROWS)
    print(f"RabbitMQ {os.environ.get('IPV_RABBITMQ_VERSION', '3.10.8')}, {args.messages} events "
          f"({args.publishers} publishers), {args.rpc} RPCs per broker; all on one machine")
    print(f"{'':<{width}}  " + "  ".join(f"{r['broker']:>16}" for r in rows) + f"  {'quorum/classic':>14}")
    for title, key, fmt in ROWS:
        cells = [fmt.format(r[key]) for r in rows]
        print(f"{title:<{width}}  " + "  ".join(f"{c:>16}" for c in cells) + f"  {rows[1][key] / rows[0][key]:>14.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
