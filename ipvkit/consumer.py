"""Event consumer entrypoint: one durable queue per handler, bounded delayed retries, then a
dead-letter queue; malformed messages are dead-lettered at once and never reach the handler.

nameko 2.14's @event_handler acks a message whose handler raised (the event is lost) or, with
requeue_on_error, redelivers it in a hot loop; it also crashes on a body it cannot decode. This
entrypoint reads raw bytes, validates the envelope and the type's schema itself, and owns acks.

The handler gets the validated envelope and must be idempotent (delivery is at-least-once).
Raise `Permanent` for an event that can never be applied: it is dead-lettered without retries.
"""
import logging
import time
from functools import partial

import eventlet
from kombu import Connection
from kombu.mixins import ConsumerMixin
from nameko.amqp.publish import Publisher
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Entrypoint

from ipvkit import events, metrics
from ipvkit.amqp import consumer_queues, events_exchange
from ipvkit.clock import SystemClock, utc_iso
from ipvkit.config import required

log = logging.getLogger(__name__)

RETRY_HEADER = "x-ipv-retries"
REASON_HEADER = "x-ipv-dead-reason"


class Permanent(Exception):
    """This event can never be applied; retrying will not help."""


class _Loop(ConsumerMixin):
    def __init__(self, entrypoint, connection):
        self.entrypoint = entrypoint
        self.connection = connection

    def get_consumers(self, Consumer, channel):
        ep = self.entrypoint
        channel.basic_qos(0, ep.prefetch, False)
        return [Consumer(queues=[ep.work_queue], on_message=ep.on_message, no_ack=False)]

    def on_connection_revived(self):   # a new connection: not consuming until its queue is declared again
        self.entrypoint.consuming = False

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self.entrypoint.consuming = True

    def on_connection_error(self, exc, interval):
        self.entrypoint.consuming = False
        log.warning("consumer %s lost the broker (%s); reconnecting in %ss", self.entrypoint.queue_name, exc, interval)


class EventConsumer(Entrypoint):
    def __init__(self, bindings, max_retries=5, retry_base_ms=200, single_active=False, **kwargs):
        """bindings: [(producer service, routing pattern)], e.g. [("providers", "provider.*")].
        single_active: one pod consumes at a time (ipvkit.amqp.consumer_queue_arguments)."""
        self.bindings = list(bindings)
        self.single_active = single_active
        self.max_retries = max_retries
        self.retry_base_ms = retry_base_ms
        self.loop = None
        self.consuming = False   # bound and subscribed: readiness (ipvkit.http) waits for it
        self.inflight = set()
        super().__init__(**kwargs)

    def setup(self):
        config = self.container.config
        self.service_name = self.container.service_name
        self.queue_name = f"{self.service_name}.{self.method_name}"
        self.work_queue, self.retry_queue, self.dead_queue = consumer_queues(
            self.queue_name, [(events_exchange(src), key) for src, key in self.bindings], self.single_active)
        self.amqp_uri = required(config, "AMQP_URI")
        self.prefetch = int(config.get("max_workers", 10))
        self.max_retries = int(config.get("EVENT_MAX_RETRIES", self.max_retries))
        # Confirms and `mandatory`: a retry or dead letter the broker did not take raises, and the message
        # it came from is then not acknowledged (it is redelivered).
        self.publisher = Publisher(self.amqp_uri, use_confirms=True, mandatory=True,
                                   declare=[self.retry_queue, self.dead_queue])

    def start(self):
        connection = Connection(self.amqp_uri, heartbeat=30)
        # Declare everything before the first message: bindings exist from the first start, so
        # events published while this service is down wait in its queue.
        with Connection(self.amqp_uri) as conn:
            for queue in (self.work_queue, self.retry_queue, self.dead_queue):
                queue(conn.default_channel).declare()
        self.loop = _Loop(self, connection)
        self.container.spawn_managed_thread(self._run)

    def _run(self):
        self.loop.run()

    def stop(self):
        if self.loop:
            self.loop.should_stop = True
        deadline = time.monotonic() + 30
        while self.inflight and time.monotonic() < deadline:
            eventlet.sleep(0.05)
        super().stop()

    def kill(self):
        if self.loop:
            self.loop.should_stop = True

    # -- one message -------------------------------------------------------------------------
    def on_message(self, message):
        try:
            event = events.parse(message.body)
        except events.MalformedEvent as exc:
            self._dead_letter(message, f"malformed: {exc}", "malformed", "unknown")
            return
        context = {"correlation_id": event["correlation_id"], "event_type": event["type"]}
        self.inflight.add(message.delivery_tag)
        try:
            self.container.spawn_worker(
                self, (event,), {}, context_data=context,
                handle_result=partial(self._handle_result, message, event, time.perf_counter()))
        except ContainerBeingKilled:
            self.inflight.discard(message.delivery_tag)
            self._settle(message.requeue)

    def _handle_result(self, message, event, started, worker_ctx, result, exc_info):
        try:
            outcome = "applied" if exc_info is None else "failed"
            metrics.HANDLER_LATENCY.labels(self.service_name, self.method_name, outcome).observe(
                time.perf_counter() - started)
            if exc_info is None:
                self._count(event["type"], "applied")
                self._settle(message.ack)
            elif isinstance(exc_info[1], Permanent):
                self._dead_letter(message, f"rejected: {exc_info[1]}", "rejected", event["type"])
            else:
                self._retry_or_dead_letter(message, event, exc_info[1])
        finally:
            self.inflight.discard(message.delivery_tag)
        return result, exc_info

    def _retry_or_dead_letter(self, message, event, exc):
        retries = int((message.headers or {}).get(RETRY_HEADER, 0))
        if retries >= self.max_retries:
            self._dead_letter(message, f"retries_exhausted: failed {retries + 1} times; last error: {exc!r}"[:1000],
                              "retries_exhausted", event["type"])
            return
        delay = min(self.retry_base_ms * 2 ** retries, 30_000)
        log.warning("%s: %s %s failed (%r); retry %d in %d ms", self.queue_name, event["type"],
                    event["event_id"], exc, retries + 1, delay)
        headers = dict(message.headers or {}, **{RETRY_HEADER: retries + 1})
        self.publisher.publish(message.body, exchange="", routing_key=self.retry_queue.name,
                               headers=headers, expiration=delay / 1000, serializer=None,
                               content_type=message.content_type or "application/json",
                               content_encoding=message.content_encoding or "utf-8")
        metrics.EVENT_RETRIES.labels(self.service_name, self.method_name).inc()
        self._count(event["type"], "retried")
        self._settle(message.ack)

    def _dead_letter(self, message, reason, kind, event_type):
        log.error("%s: dead-lettering a message: %s", self.queue_name, reason)
        headers = dict(message.headers or {}, **{
            REASON_HEADER: reason, "x-ipv-dead-at": utc_iso(SystemClock().now()),
            "x-ipv-queue": self.queue_name})
        self.publisher.publish(message.body, exchange="", routing_key=self.dead_queue.name,
                               headers=headers, serializer=None,
                               content_type=message.content_type or "application/octet-stream",
                               content_encoding=message.content_encoding or "binary")
        metrics.DEAD_LETTERS.labels(self.service_name, self.method_name, kind).inc()
        self._count(event_type, "dead_lettered")
        self._settle(message.ack)

    def _count(self, event_type, outcome):
        known = any(t == event_type for t, _ in events.registered_types())
        metrics.EVENTS_CONSUMED.labels(self.service_name, self.method_name,
                                       event_type if known else "unknown", outcome).inc()

    def _settle(self, action):
        # After a reconnect the message belongs to a dead channel: the broker redelivers it.
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - any channel error means "redelivered later"
            log.warning("%s: could not settle a message (%r); the broker will redeliver it",
                        self.queue_name, exc)


consume = EventConsumer.decorator
