import os
import sys
import warnings

warnings.filterwarnings("ignore", message=".*Eventlet is deprecated")
import eventlet  # noqa: E402


def _browser_run():
    """The portal's browser tests (tests/portal) drive Playwright, whose connection to the browser stops
    answering after the first navigation under eventlet's monkey-patching. So they run in a pytest
    process of their own, without it (`make test` runs that one after the rest): the one whose every
    path argument lies in tests/portal."""
    paths = [a.split("::")[0] for a in sys.argv[1:] if not a.startswith("-") and os.path.exists(a.split("::")[0])]
    portal = os.path.join(os.path.dirname(os.path.abspath(__file__)), "portal")
    return bool(paths) and all(os.path.abspath(p).startswith(portal) for p in paths)


if not _browser_run():
    eventlet.monkey_patch()  # nameko needs it before anything opens a socket
    collect_ignore = ["portal"]

import ssl  # noqa: E402
import urllib3.util.ssl_  # noqa: E402

# schemathesis's pytest plugin imports urllib3 before this file patches ssl, so urllib3 still holds the
# unpatched SSLContext, whose `options` setter then recurses into eventlet's (boto3 builds one even for
# http). `nameko run` patches before any import and never meets this.
urllib3.util.ssl_.SSLContext = ssl.SSLContext

from hypothesis import settings  # noqa: E402

# Property tests check what is computed, not how fast: hypothesis's default deadline (200 ms an example)
# would turn a busy machine's pause into a failure.
settings.register_profile("ipv", deadline=None)
settings.load_profile("ipv")

import json  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402
from kombu import Connection, Queue  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from ipvkit import contracts  # noqa: E402,F401
from ipvkit.amqp import events_exchange  # noqa: E402
from ipvkit.events import parse  # noqa: E402
from tests.issuer import LocalIssuer  # noqa: E402


# How long a test waits for something asynchronous (an event, a queue depth, a read model): generous,
# so that a loaded machine makes the suite slower, not red. Every wait returns the moment it holds.
ASYNC_WAIT = 60


def eventually(what, check, timeout=ASYNC_WAIT, interval=0.1):
    """check()'s first truthy result, asked again every `interval` s; AssertionError naming `what`
    after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return result


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def amqp_uri():
    uri = os.environ.get("TEST_AMQP_URI") or os.environ.get("AMQP_URI")
    if not uri:
        pytest.fail("TEST_AMQP_URI is not set: run the suite with `make test`")
    return uri


@pytest.fixture(scope="session")
def mongo_uri():
    uri = os.environ.get("MONGO_URI")
    if not uri:
        pytest.fail("MONGO_URI is not set: run the suite with `make test`")
    return uri


@pytest.fixture(scope="session")
def consumer_queue_names():
    from ipvkit.deadletters import consumers
    return [name + suffix for name, *_ in consumers() for suffix in ("", ".retry", ".dlq")]


@pytest.fixture(autouse=True)
def empty_consumer_queues(request):
    """Consumer queues are durable and shared by every test on the vhost: events one test published while
    a service was not running would wait there and reach the next test's fresh database. So every test
    that touches the broker starts with them empty."""
    if "amqp_uri" not in request.fixturenames:
        return
    with Connection(request.getfixturevalue("amqp_uri")) as conn:
        for name in request.getfixturevalue("consumer_queue_names"):
            channel = conn.channel()
            try:
                channel.queue_purge(name)
            except Exception as exc:  # noqa: BLE001 - a queue not declared yet (404) has nothing to purge
                if getattr(exc, "code", None) != 404:
                    raise
            finally:
                if channel.is_open:
                    channel.close()


@pytest.fixture(scope="session")
def s3_settings():
    """The object store the stack runs (scripts/stack.sh: the Versity S3 gateway)."""
    settings = {k: os.environ.get(k) for k in ("S3_ENDPOINT_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY")}
    if not all(settings.values()):
        pytest.fail("S3_ENDPOINT_URL, S3_ACCESS_KEY and S3_SECRET_KEY are not set: run the suite with `make test`")
    return settings


def s3_client(settings):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=settings["S3_ENDPOINT_URL"], aws_access_key_id=settings["S3_ACCESS_KEY"],
                        aws_secret_access_key=settings["S3_SECRET_KEY"], region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


def remove_bucket(settings, bucket):
    """Empties and deletes a test's bucket, legal holds lifted first; nothing if it was never made."""
    from botocore.exceptions import ClientError
    client = s3_client(settings)
    try:
        versions = client.list_object_versions(Bucket=bucket)
    except ClientError:
        return
    for entry in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        try:
            client.put_object_legal_hold(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"],
                                         LegalHold={"Status": "OFF"})
        except ClientError:
            pass  # a delete marker has no hold
        client.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def issuer():
    """The tests' own token issuer (tests/issuer.py): services under test trust its public keys."""
    local = LocalIssuer().start()
    yield local
    local.stop()


@pytest.fixture(scope="session")
def realm():
    """The Keycloak realm `ipv` that `make test` started: real users' tokens (tests/realm.py)."""
    from tests.realm import Realm
    if not os.environ.get("KEYCLOAK_URL"):
        pytest.fail("KEYCLOAK_URL is not set: run the suite with `make test`")
    return Realm()


@pytest.fixture
def trusted_issuer(issuer):
    """The issuer's settings services under test are given; tests/hostile puts the realm here."""
    return issuer.config


@pytest.fixture
def service_config(amqp_uri, mongo_uri, trusted_issuer, s3_settings):
    """A fresh database per test, a free HTTP port, the test vhost, the issuer whose tokens count; for
    the documents service a fresh bucket on the stack's object store."""
    db = f"test_{uuid.uuid4().hex[:12]}"
    # No tooling client unless a test gives it one (tests/integration/test_joining.py): a service under test
    # neither changes accounts nor reads the realm's sign-in events into its ledger.
    config = {"AMQP_URI": amqp_uri, "MONGO_URI": mongo_uri, "MONGO_DB": db,
              "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}", "max_workers": 10, "IDENTITY_CLIENT_SECRET": "",
              **trusted_issuer, "S3_BUCKET": f"test-{db[5:]}", **s3_settings}
    yield config
    MongoClient(mongo_uri).drop_database(db)
    remove_bucket(s3_settings, config["S3_BUCKET"])


@pytest.fixture
def token(issuer):
    """`token(role, subject)`: an Authorization header the services under test accept."""
    return issuer.header


class EventTap:
    """A test's own queue on a producer's exchange: what a real consumer elsewhere would get."""

    def __init__(self, amqp_uri, producer, pattern):
        self.conn = Connection(amqp_uri)
        self.queue = Queue(f"test-tap-{uuid.uuid4().hex[:8]}", exchange=events_exchange(producer),
                           routing_key=pattern, exclusive=True, auto_delete=True)
        self.queue(self.conn.default_channel).declare()

    def next(self, timeout=ASYNC_WAIT):
        message = eventually("an event", lambda: self.queue(self.conn.default_channel).get(no_ack=True), timeout, 0.05)
        return parse(message.body)

    def take(self, count, timeout=ASYNC_WAIT, quiet=0.5):
        """The next `count` events however long a slow machine takes to publish them (failing only
        after `timeout`), then whatever else arrives within `quiet` seconds, so one too many shows."""
        got, end = [], eventlet.hubs.get_hub().clock() + timeout
        while len(got) < count:
            if eventlet.hubs.get_hub().clock() > end:
                raise AssertionError(f"only {len(got)} of {count} events arrived within {timeout}s: {got}")
            message = self.queue(self.conn.default_channel).get(no_ack=True)
            if message is None:
                eventlet.sleep(0.05)
            else:
                got.append(parse(message.body))
        return got + self.drain(quiet)

    def drain(self, seconds=1.0):
        got, end = [], eventlet.hubs.get_hub().clock() + seconds
        while eventlet.hubs.get_hub().clock() < end:
            message = self.queue(self.conn.default_channel).get(no_ack=True)
            if message is None:
                eventlet.sleep(0.05)
            else:
                got.append(parse(message.body))
        return got

    def close(self):
        self.conn.release()


@pytest.fixture
def event_tap(amqp_uri):
    taps = []

    def make(producer, pattern="#"):
        tap = EventTap(amqp_uri, producer, pattern)
        taps.append(tap)
        return tap
    yield make
    for tap in taps:
        tap.close()


# Every test publisher waits for the broker's confirms. Unconfirmed messages still in a channel when its
# connection closes can be dropped: published at once, then the connection closed, four small events and a
# 262 KB one onto a quorum queue lost the big one and all after it in about 1 run of 100 (RabbitMQ 3.10.8).
CONFIRMED = {"confirm_publish": True}


def publish_raw(amqp_uri, exchange, routing_key, body, content_type="application/json"):
    with Connection(amqp_uri, transport_options=CONFIRMED) as conn:
        producer = conn.Producer()
        producer.publish(body, exchange=exchange, routing_key=routing_key, content_type=content_type,
                         content_encoding="utf-8", declare=[exchange])


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False)
