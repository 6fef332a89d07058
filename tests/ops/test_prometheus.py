"""A real Prometheus (Debian's package) scrapes running service containers with the project's scrape
configuration and alert rules; the test reads figures back through its HTTP query API."""
import shutil
import subprocess
import time
from pathlib import Path

import eventlet
import pytest
import requests
import yaml

from services.enterprises.service import EnterprisesService
from tests.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CODE = "91350100M000100Y43"
ENTERPRISE = {"credit_code": CODE, "name": "福州闽光精密制造有限公司", "region": "350102", "industry": "C34", "size": "small"}


class Prometheus:
    def __init__(self, base):
        self.base = base

    def query(self, expr):
        answer = requests.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr):
        """The single sample's value, or None when the expression selects nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr, check, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            got = self.value(expr)
            if check(got):
                return got
            assert time.monotonic() < deadline, f"{expr} = {got} after {timeout}s"
            eventlet.sleep(0.25)


@pytest.fixture
def prometheus(tmp_path):
    """Starts Prometheus on loopback with deploy/prometheus/local.yml, targets replaced by `targets`
    ({app: "host:port"}) and a 1 s interval; returns a client once it is ready."""
    process = None

    def start(targets):
        nonlocal process
        config = yaml.safe_load((ROOT / "deploy/prometheus/local.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str((ROOT / "deploy/prometheus" / f).resolve()) for f in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [address], "labels": {"app": app}} for app, address in targets.items()]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        process = subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                if requests.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    return Prometheus(base)
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready after 30 s"
            eventlet.sleep(0.2)
    yield start
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


def test_prometheus_scrapes_the_services_and_sees_a_request_counted(container_factory, service_config, token,
                                                                    prometheus):
    container = container_factory(EnterprisesService, service_config)
    container.start()
    address = service_config["WEB_SERVER_ADDRESS"]
    prom = prometheus({"enterprises": address})

    rules = requests.get(f"{prom.base}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) == 7  # the project's alert rules are loaded
    prom.wait_for('up{job="ipv-services", app="enterprises"}', lambda v: v == 1)
    registered = ('sum(ipv_http_request_duration_seconds_count{service="enterprises", method="POST",'
                  ' route="/api/v1/enterprises", status="201"})')
    published = 'sum(ipv_events_published_total{service="enterprises", type="enterprise.registered", outcome="published"})'
    # One registry per process: earlier tests in this run may have counted some already.
    before = {expr: prom.value(expr) or 0 for expr in (registered, published)}

    created = requests.post(f"http://{address}/api/v1/enterprises", json=ENTERPRISE,
                            headers=token("officer", "o1"), timeout=10)
    assert created.status_code == 201, created.text
    for expr, was in before.items():
        prom.wait_for(expr, lambda v: v == was + 1)

    container.stop()
    prom.wait_for('up{job="ipv-services", app="enterprises"}', lambda v: v == 0)
