"""The event envelope and the registry of versioned event data schemas.

Routing key = `type` = `aggregate.past_tense`, published on the producer's topic exchange
`<producer>.events`. An additive change bumps `version` (readers ignore unknown fields);
a breaking change is a new type name.
"""
import uuid

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from ipvkit import strictjson
from ipvkit.clock import utc_iso
from ipvkit.schemas import schema_of
from ipvkit.text import Text

MAX_EVENT_BYTES = 256 * 1024  # far above any real event; a larger body is refused, not parsed

_registry = {}  # (type, version) -> Schema class


class MalformedEvent(Exception):
    """Not an event this system can apply: it goes to the dead-letter queue at once."""


def register(event_type, version=1):
    def decorate(schema_cls):
        key = (event_type, version)
        if key in _registry:
            raise RuntimeError(f"event schema {key} registered twice")
        _registry[key] = schema_cls
        return schema_cls
    return decorate


def registered_types():
    return sorted(_registry)


class ActorSchema(Schema):
    role = Text(required=True, validate=validate.Length(1, 32))
    id = Text(required=True, validate=validate.Length(1, 128))


class EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    event_id = fields.UUID(required=True)
    type = Text(required=True, validate=validate.Regexp(r"^[a-z_]+\.[a-z_]+$"))
    version = fields.Integer(required=True, strict=True, validate=validate.Range(1, 1000))
    occurred_at = fields.AwareDateTime(required=True, default_timezone=None)
    producer = Text(required=True, validate=validate.Length(1, 64))
    aggregate_id = Text(required=True, validate=validate.Length(1, 128))
    sequence = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    correlation_id = Text(required=True, validate=validate.Length(1, 128))
    causation_id = Text(required=True, allow_none=True, validate=validate.Length(1, 128))
    actor = fields.Nested(ActorSchema, required=True)
    data = fields.Dict(required=True)


def new_event(*, type, producer, aggregate_id, sequence, data, actor, now,
              correlation_id=None, causation_id=None, version=1):
    """Builds a valid envelope; raises if `data` does not match the registered schema."""
    schema = _schema_for(type, version)
    errors = schema_of(schema, RAISE).validate(data)
    if errors:
        raise ValueError(f"{type} v{version} data invalid: {errors}")
    event_id = str(uuid.uuid4())
    return {
        "event_id": event_id,
        "type": type,
        "version": version,
        "occurred_at": utc_iso(now),
        "producer": producer,
        "aggregate_id": str(aggregate_id),
        "sequence": sequence,
        "correlation_id": correlation_id or event_id,
        "causation_id": causation_id,
        "actor": dict(actor),
        "data": data,
    }


def _schema_for(event_type, version):
    try:
        return _registry[(event_type, version)]
    except KeyError:
        known = sorted(v for t, v in _registry if t == event_type)
        if known:
            raise MalformedEvent(f"unknown version {version} of {event_type} (known: {known})")
        raise MalformedEvent(f"unknown event type {event_type!r}")


def parse(body):
    """Bytes or str off the wire -> validated envelope dict, or MalformedEvent with the reason."""
    if isinstance(body, str):
        if len(body) > MAX_EVENT_BYTES:
            raise MalformedEvent(f"event of {len(body)} characters exceeds {MAX_EVENT_BYTES}")
        body = body.encode("utf-8", "surrogatepass")  # read as the bytes it came as: one rule for both
    if isinstance(body, (bytes, bytearray)):
        if len(body) > MAX_EVENT_BYTES:
            raise MalformedEvent(f"event of {len(body)} bytes exceeds {MAX_EVENT_BYTES}")
        try:
            body = strictjson.loads(bytes(body), "event")
        except strictjson.Refused as exc:
            reason = exc.message.removeprefix("event is ")
            raise MalformedEvent(f"{reason} {exc.fields}" if exc.fields else reason)
    if not isinstance(body, dict):
        raise MalformedEvent("an event must be a JSON object")
    try:
        envelope = schema_of(EnvelopeSchema).load(body)
    except ValidationError as exc:
        raise MalformedEvent(f"bad envelope: {exc.messages}")
    schema = _schema_for(envelope["type"], envelope["version"])
    try:
        data = schema_of(schema, EXCLUDE).load(body["data"])
    except ValidationError as exc:
        raise MalformedEvent(f"bad {envelope['type']} v{envelope['version']} data: {exc.messages}")
    # Keep the wire form of the envelope (strings), with the data as loaded.
    out = {k: body[k] for k in schema_of(EnvelopeSchema).fields}
    out["data"] = data
    return out
