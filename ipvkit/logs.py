"""One JSON object per log line: UTC time, level, service, logger, message and, inside a worker or an
HTTP request, its `correlation_id`, `entrypoint`, `route` and `event_type`. Tokens, URI passwords and
the configured secrets are redacted from every field, the traceback included.

The per-call fields live in a contextvar. Each eventlet green thread is a greenlet with its own
contextvars context, so two workers running at once never see each other's correlation id; nameko
runs `worker_setup` in the worker's own green thread, which is where `LogContext` binds them.
"""
import contextvars
import json
import logging
import os
import re
import time

from nameko.extensions import DependencyProvider

_fields = contextvars.ContextVar("ipv_log_fields", default={})
CONTEXT_KEYS = ("correlation_id", "event_type", "entrypoint", "route")
REDACTED = "[redacted]"

_PATTERNS = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]+=*"), "Bearer " + REDACTED),
    # A JWT anywhere, with or without its scheme (header.payload.signature, base64url).
    (re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), REDACTED),
    # user:password@ in amqp://, mongodb:// and other URIs.
    (re.compile(r"([a-z][a-z0-9+.\-]*://)[^\s/@:\"']+:[^\s/@\"']+@", re.I), r"\1" + REDACTED + "@"),
)
# Environment variables whose values must never appear in a log line.
_SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$")


def bind(**fields):
    """Adds fields to every log line of the current green thread; returns a token for `unbind`."""
    return _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind(token):
    _fields.reset(token)


def current():
    return dict(_fields.get())


class LogContext(DependencyProvider):
    """Binds the worker's correlation id, entrypoint, route and event type."""

    def worker_setup(self, worker_ctx):
        data, entrypoint = worker_ctx.context_data, worker_ctx.entrypoint
        fields = {"entrypoint": entrypoint.method_name,
                  **{k: data[k] for k in ("correlation_id", "event_type") if data.get(k)}}
        if hasattr(entrypoint, "url"):  # an HTTP entrypoint: its route template, never the raw path
            fields["route"] = f"{entrypoint.method} {entrypoint.url}"
        _fields.set(fields)

    def worker_teardown(self, worker_ctx):
        _fields.set({})


def secret_values(environ=None):
    """The values of secret-looking environment variables (a client secret, a password, ...), longest first."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if _SECRET_ENV.search(k.upper()) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def redact(text, secrets=()):
    for value in secrets:
        text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    converter = time.gmtime

    def __init__(self, service="", **kwargs):
        super().__init__()
        self.service = service
        self.secrets = secret_values()

    def format(self, record):
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "service": self.service, "logger": record.name,
                 "message": record.getMessage()}
        entry.update(_fields.get())
        for key in CONTEXT_KEYS:  # `extra={...}` on the call wins over the bound context
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        entry = {k: redact(v, self.secrets) if isinstance(v, str) else v for k, v in entry.items()}
        return json.dumps(entry, ensure_ascii=False, default=str)
