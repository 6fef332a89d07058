"""The envelope: built valid, and every kind of malformed message refused with its reason."""
import json
from datetime import datetime, timezone

import pytest

from ipvkit import contracts  # noqa: F401
from ipvkit.events import MAX_EVENT_BYTES, MalformedEvent, new_event, parse

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
DATA = {"enterprise_id": "91350100M000100Y43", "name": "闽光", "region": "350102", "industry": "C34", "size": "small"}


def event(**changes):
    ev = new_event(type="enterprise.registered", producer="enterprises", aggregate_id="91350100M000100Y43",
                   sequence=1, data=DATA, actor={"role": "officer", "id": "o1"}, now=NOW)
    ev.update(changes)
    return ev


def test_round_trip_keeps_every_envelope_field():
    ev = event()
    assert parse(json.dumps(ev).encode()) == ev
    assert ev["occurred_at"] == "2026-11-25T08:00:00.000Z"
    assert ev["correlation_id"] == ev["event_id"] and ev["causation_id"] is None


def test_producer_cannot_build_invalid_data():
    with pytest.raises(ValueError):
        new_event(type="enterprise.registered", producer="enterprises", aggregate_id="x", sequence=1,
                  data=dict(DATA, size="huge"), actor={"role": "officer", "id": "o1"}, now=NOW)


def test_readers_ignore_unknown_data_fields():
    ev = event(data=dict(DATA, added_in_v1_1="x"))
    assert "added_in_v1_1" not in parse(json.dumps(ev))["data"]


@pytest.mark.parametrize("body,reason", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "JSON object"),
    (json.dumps(event(type="enterprise.teleported")).encode(), "unknown event type"),
    (json.dumps(event(version=7)).encode(), "unknown version"),
    (json.dumps(event(sequence="1")).encode(), "bad envelope"),
    (json.dumps(event(event_id="not-a-uuid")).encode(), "bad envelope"),
    (json.dumps({k: v for k, v in event().items() if k != "actor"}).encode(), "bad envelope"),
    (json.dumps(event(data=dict(DATA, region=350102))).encode(), "bad enterprise.registered v1 data"),
    (b"{" + b" " * MAX_EVENT_BYTES + b"}", "exceeds"),
])
def test_malformed_messages_are_refused_with_a_reason(body, reason):
    with pytest.raises(MalformedEvent, match=reason):
        parse(body)
