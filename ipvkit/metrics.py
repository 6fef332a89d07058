"""Prometheus metrics every service exposes. Labels carry bounded values only (no ids): HTTP
metrics are labelled by the route template, never the path. Each service defines its business
gauges in its own `metrics.py`; the list and the alerts on them are in docs/operations.md."""
from prometheus_client import (CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, disable_created_metrics,
                               generate_latest)

# A `_created` timestamp series beside every counter and histogram doubles the series for nothing
# our rules read (rate() and increase() handle counter resets).
disable_created_metrics()

HTTP_LATENCY = Histogram(
    "ipv_http_request_duration_seconds", "HTTP request latency by route and status",
    ["service", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5))
EVENTS_PUBLISHED = Counter(
    "ipv_events_published_total", "Events handed to the broker by the outbox relay",
    ["service", "type", "outcome"])
EVENTS_CONSUMED = Counter(
    "ipv_events_consumed_total", "Events taken off a queue, by what became of them",
    ["service", "consumer", "type", "outcome"])
HANDLER_LATENCY = Histogram(
    "ipv_event_handler_duration_seconds", "Event handler latency", ["service", "consumer", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
EVENT_RETRIES = Counter(
    "ipv_event_retries_total", "Failed event deliveries scheduled for another try",
    ["service", "consumer"])
DEAD_LETTERS = Counter(
    "ipv_dead_letters_total", "Messages moved to a dead-letter queue", ["service", "consumer", "reason"])
OUTBOX_BACKLOG = Gauge(
    "ipv_outbox_backlog_documents", "Aggregates with events not yet published", ["service", "collection"])
DB_COMMANDS = Counter(
    "ipv_db_commands_total", "Database commands sent, by collection, kind (read, write) and whether the "
    "store can find the documents by `_id` or must scan the collection for them",
    ["service", "collection", "kind", "access"])


def exposition():
    return generate_latest(), CONTENT_TYPE_LATEST
