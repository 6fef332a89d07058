"""Structured logs: one JSON object a line, the call's correlation id and event type on every line a
worker writes (per green thread, so concurrent calls never mix), and no token or secret ever written."""
import io
import json
import logging
from datetime import datetime, timezone

import eventlet
import pytest
import requests

from ipvkit.consumer import consume
from ipvkit.events import new_event
from ipvkit.amqp import events_exchange
from ipvkit.http import ServiceBase, api
from ipvkit.logs import JsonFormatter, bind, unbind
from tests.conftest import dumps, eventually, publish_raw

log = logging.getLogger("probe")
HELD = {}  # the officer's token of this test run: the probe's error message quotes it


@pytest.fixture(autouse=True)
def officer_token(issuer):
    HELD["token"] = issuer.token("officer", "o1")
    return HELD["token"]
CODE = "91350100M000100Y43"


class Probe(ServiceBase):
    name = "logprobe"

    @api("GET", "/api/v1/probe/<n>", roles=("officer",))
    def probe(self, call):
        eventlet.sleep(0.2 - 0.05 * int(call.path["n"]))  # later requests finish first: workers overlap
        log.info("probe %s done", call.path["n"])
        return {"n": call.path["n"]}

    @api("GET", "/api/v1/broken", roles=("officer",))
    def broken(self, call):
        raise RuntimeError(f"cannot reach amqp://ipv:s3cret-pass@rabbitmq:5672/ with Bearer {HELD['token']}")

    @consume([("enterprises", "enterprise.registered")])
    def on_registered(self, event):
        log.info("saw %s", event["event_id"])


@pytest.fixture
def lines():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(service="logprobe"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def read():
        return [json.loads(line) for line in out.getvalue().splitlines()]
    yield read
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_concurrent_green_threads_keep_their_own_correlation_id(lines):
    def work(cid, delay):
        token = bind(correlation_id=cid)
        eventlet.sleep(delay)
        log.info("work %s", cid)
        unbind(token)
    pool = eventlet.GreenPool()
    for i in range(5):
        pool.spawn(work, f"c{i}", 0.05 * (5 - i))
    pool.waitall()
    log.info("outside")
    got = {line["message"]: line.get("correlation_id") for line in lines()}
    assert got == {**{f"work c{i}": f"c{i}" for i in range(5)}, "outside": None}


@pytest.mark.integration
def test_request_and_event_logs_carry_their_correlation_id_and_no_secret(
        container_factory, service_config, amqp_uri, lines, officer_token):
    container_factory(Probe, service_config).start()
    base = f"http://{service_config['WEB_SERVER_ADDRESS']}"
    auth = {"Authorization": f"Bearer {officer_token}"}
    pool = eventlet.GreenPool()
    answers = list(pool.imap(lambda n: requests.get(f"{base}/api/v1/probe/{n}", timeout=5,
                                                    headers=dict(auth, **{"X-Correlation-Id": f"req-{n}"})),
                             range(3)))
    assert [a.headers["X-Correlation-Id"] for a in answers] == ["req-0", "req-1", "req-2"]
    fresh = requests.get(f"{base}/api/v1/probe/3", headers=auth, timeout=5).headers["X-Correlation-Id"]
    assert len(fresh) == 36  # none sent: a new one, returned so the caller can quote it
    failed = requests.get(f"{base}/api/v1/broken", headers=dict(auth, **{"X-Correlation-Id": "req-bad"}), timeout=5)
    assert failed.status_code == 500

    event = new_event(type="enterprise.registered", producer="enterprises", aggregate_id=CODE, sequence=1,
                      actor={"role": "officer", "id": "o1"}, now=datetime.now(timezone.utc), correlation_id="flow-42",
                      data={"enterprise_id": CODE, "name": "n", "region": "350102", "industry": "C34", "size": "small"})
    publish_raw(amqp_uri, events_exchange("enterprises"), "enterprise.registered", dumps(event))
    eventually("the handler's log line", lambda: any(line["message"] == f"saw {event['event_id']}" for line in lines()),
               interval=0.05)

    by_message = {line["message"]: line for line in lines()}
    for n in range(3):
        line = by_message[f"probe {n} done"]
        assert (line["correlation_id"], line["entrypoint"], line["service"]) == (f"req-{n}", "probe", "logprobe")
    assert by_message["probe 0 done"]["route"] == "GET /api/v1/probe/<n>"
    seen = by_message[f"saw {event['event_id']}"]
    assert (seen["correlation_id"], seen["event_type"], seen["entrypoint"]) == (
        "flow-42", "enterprise.registered", "on_registered")
    errors = [line for line in lines() if line["level"] == "ERROR"]
    assert errors and all(line["correlation_id"] == "req-bad" for line in errors)

    written = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines())
    assert "cannot reach amqp://[redacted]@rabbitmq:5672/ with Bearer [redacted]" in written
    assert officer_token not in written and "s3cret-pass" not in written and officer_token.split(".")[1] not in written


@pytest.fixture
def signing_key(monkeypatch):
    monkeypatch.setenv("OIDC_CLIENT_SECRET", "hush-hush-signing-key")  # before `lines` makes its formatter


def test_secrets_are_redacted_from_message_extra_fields_and_traceback(signing_key, lines, officer_token):
    try:
        raise ValueError(f"token {officer_token} with key hush-hush-signing-key")
    except ValueError:
        log.exception("mongodb://root:pw123456@db/ failed", extra={"event_type": f"x {officer_token}"})
    line = lines()[-1]
    text = json.dumps(line)
    assert "hush-hush" not in text and officer_token not in text and "pw123456" not in text
    assert line["message"] == "mongodb://[redacted]@db/ failed"
    assert "token [redacted] with key [redacted]" in line["exception"]
