"""Service-independent fixtures: every service found in services/*/service.py, started in a
container with its own config.yaml defaults, a fresh database and a free port, trusting the real
Keycloak realm: the hostile tests (the authorization matrix and the fuzz tests above all) run on tokens
the realm issued to real users."""
from pathlib import Path

import pytest
import requests
from kombu import Connection

from ipvkit.config import load
from ipvkit.deadletters import _Message, consumers, queue_depth, services
from ipvkit.http import ApiHandler
from tests.hostile.profiles import profile

ROOT = Path(__file__).resolve().parents[2]
SERVICES = services()
CONSUMERS = consumers(SERVICES)


def api_routes(cls):
    """[(method name, ApiHandler)] of a service class, in a stable order."""
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
    found = []
    for attr in sorted(dir(cls)):
        for ext in getattr(getattr(cls, attr, None), ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(ext, ApiHandler):
                found.append((attr, ext))
    return found


@pytest.fixture
def trusted_issuer(realm):
    return realm.config


@pytest.fixture
def token(realm):
    return realm.header


class Client:
    """HTTP calls to one running service as a chosen principal (officer by default)."""

    def __init__(self, base, token):
        self.base = base
        self.token = token

    def __call__(self, method, path, role="officer", subject="o1", headers=None, **kwargs):
        headers = dict(headers or {})
        if role:
            headers.update(self.token(role, subject))
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def start_service(container_factory, service_config, token):
    def start(name):
        config = load(ROOT / "services" / name / "config.yaml")
        config.pop("LOGGING", None)
        config.update(service_config, **profile(name).config)
        container = container_factory(SERVICES[name], config)
        container.start()
        client = Client(f"http://{service_config['WEB_SERVER_ADDRESS']}", token)
        client.container = container   # for seeds that feed events to a consumer
        return container, client
    return start


def drain(amqp_uri, queue):
    """Takes every message off `queue` (the DLQs are shared by every test on this vhost)."""
    got = []
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            got.append(_Message(message))
        channel.close()
    return got


def purge(amqp_uri, queue):
    """Empties a queue if it exists: a `#` consumer's queue (audit) keeps every event other tests on
    this vhost published while its service was not running."""
    with Connection(amqp_uri) as conn:
        if queue_depth(conn, queue) is not None:
            channel = conn.channel()
            channel.queue_purge(queue)
            channel.close()
