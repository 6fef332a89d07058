"""A real Prometheus (Debian's package) scrapes running service containers with the project's Kubernetes
scrape configuration and alert rules; the test reads figures back through its HTTP query API."""
import json
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import eventlet
import pytest
import requests
import yaml
from nameko.testing.services import entrypoint_hook
from pymongo import MongoClient

from services.enterprises.service import EnterprisesService
from services.vouchers.service import VouchersService
from tests.conftest import free_port
from tests.ops.test_k8s import kustomize

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

    def wait_for(self, expr, check, timeout=90):  # generous: a loaded machine misses 1 s scrapes, it is not broken
        deadline = time.monotonic() + timeout
        while True:
            got = self.value(expr)
            if check(got):
                return got
            assert time.monotonic() < deadline, f"{expr} = {got} after {timeout}s"
            eventlet.sleep(0.25)


def label_name(key):
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def pod_target(app, port):
    """The discovery labels Kubernetes would give the pod of the rendered Deployment `app`,
    with its port annotation pointing at `port` where the test runs the service."""
    (deployment,) = [d for d in kustomize(ROOT / "deploy/k8s/base")
                     if d["kind"] == "Deployment" and d["metadata"]["name"] == app]
    meta = deployment["spec"]["template"]["metadata"]
    labels = {f"__meta_kubernetes_pod_label_{label_name(k)}": v for k, v in meta["labels"].items()}
    labels.update({f"__meta_kubernetes_pod_annotation_{label_name(k)}": v for k, v in meta["annotations"].items()})
    labels.update(__meta_kubernetes_pod_annotation_prometheus_io_port=str(port),
                  __meta_kubernetes_pod_name=f"{app}-7d9f-x2k4p")
    return {"targets": ["127.0.0.1"], "labels": labels}


@pytest.fixture
def prometheus(tmp_path):
    """Starts Prometheus on loopback with the Kubernetes scrape configuration and alert rules
    (deploy/k8s/base/monitoring), pod discovery replaced by file discovery of `targets`
    ({app: "127.0.0.1:port"}) with the labels and annotations of the rendered pods, and a 1 s interval.
    Debian's Prometheus is built without Kubernetes discovery; the relabelling is the same."""
    process = None

    def start(targets):
        nonlocal process
        monitoring = ROOT / "deploy/k8s/base/monitoring"
        config = yaml.safe_load((monitoring / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(monitoring / "alerts.yml")]
        for job in config["scrape_configs"]:
            job.pop("kubernetes_sd_configs")
            job["file_sd_configs"] = [{"files": [str(tmp_path / "pods.json")], "refresh_interval": "1s"}]
        pods = [pod_target(app, address.rsplit(":", 1)[1]) for app, address in targets.items()]
        (tmp_path / "pods.json").write_text(json.dumps(pods))
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


@pytest.fixture
def vouchers_config(service_config, mongo_uri):
    """The vouchers service's own database and port next to the enterprises service of `service_config`."""
    config = dict(service_config, MONGO_DB=service_config["MONGO_DB"] + "_v", WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    yield config
    MongoClient(mongo_uri).drop_database(config["MONGO_DB"])


def refresh_figures(container):
    """Runs the vouchers service's metrics timer now rather than waiting up to its interval."""
    with entrypoint_hook(container, "refresh_metrics") as refresh:
        refresh()


def programme(today):
    return {"name": "玉环市知识产权服务券", "region": "331021", "fund_source": "中小企业发展专项资金",
            "budget_fen": 10_000_000, "opens_on": str(today - timedelta(days=30)),
            "closes_on": str(today + timedelta(days=30)), "validity_days": 180, "redemption_model": "agency_redeems",
            "tiers": [{"tier": "srdi_sme", "face_value_fen": 2_000_000, "annual_cap_fen": 10_000_000}],
            "catalogue": [{"service_code": "PAT-01", "name": "专利导航分析", "subsidy_ratio_bp": 5000,
                           "item_cap_fen": 1_000_000, "agency_kinds": ["patent"]}]}


def test_prometheus_sees_a_request_then_the_budget_move_when_a_voucher_is_issued(
        container_factory, service_config, vouchers_config, token, prometheus):
    """Enterprises and vouchers run on the real broker; the qualification reaches vouchers as an event."""
    enterprises = container_factory(EnterprisesService, service_config)
    enterprises.start()
    vouchers = container_factory(VouchersService, vouchers_config)
    vouchers.start()
    ent, vou = (f"http://{c['WEB_SERVER_ADDRESS']}" for c in (service_config, vouchers_config))
    prom = prometheus({"enterprises": service_config["WEB_SERVER_ADDRESS"],
                       "vouchers": vouchers_config["WEB_SERVER_ADDRESS"]})
    rules = requests.get(f"{prom.base}/api/v1/rules", timeout=5).json()["data"]["groups"]
    ours = yaml.safe_load((ROOT / "deploy/k8s/base/monitoring/alerts.yml").read_text())["groups"]
    assert sum(len(g["rules"]) for g in rules) == sum(len(g["rules"]) for g in ours) == 10  # all of them loaded
    for app in ("enterprises", "vouchers"):
        prom.wait_for(f'up{{job="ipv-services", app="{app}"}}', lambda v: v == 1)
    targets = requests.get(f"{prom.base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    # address and path come from each pod's annotations through the relabelling
    assert {t["labels"]["app"]: t["scrapeUrl"] for t in targets} == {"enterprises": f"{ent}/metrics",
                                                                    "vouchers": f"{vou}/metrics"}

    # A generic figure: the registration is counted, and so is its event.
    # Both containers run in this process and share its metrics registry, so every query names its
    # target (`app`); earlier tests in this run may have counted some already.
    registered = ('ipv_http_request_duration_seconds_count{app="enterprises", service="enterprises", method="POST",'
                  ' route="/api/v1/enterprises", status="201"}')
    published = ('ipv_events_published_total{app="enterprises", service="enterprises", type="enterprise.registered",'
                 ' outcome="published"}')
    before = {expr: prom.value(expr) or 0 for expr in (registered, published)}
    officer = token("officer", "o1")
    assert requests.post(f"{ent}/api/v1/enterprises", json=ENTERPRISE, headers=officer, timeout=10).status_code == 201
    prom.wait_for(registered, lambda v: v == before[registered] + 1)
    # The relay publishes at least once; a lost lease race may publish twice (consumers dedupe).
    prom.wait_for(published, lambda v: v >= before[published] + 1)

    today = datetime.now(timezone.utc).date()
    granted = requests.post(f"{ent}/api/v1/enterprises/{CODE}/qualifications", headers=officer, timeout=10, json={
        "tier": "srdi_sme", "level": "provincial", "certificate_no": "闽专精特新〔2026〕0117",
        "issuing_authority": "福建省工业和信息化厅", "valid_from": str(today - timedelta(days=200)),
        "valid_to": str(today + timedelta(days=300))})
    assert granted.status_code == 201, granted.text
    created = requests.post(f"{vou}/api/v1/programmes", json=programme(today), headers=officer, timeout=10)
    assert created.status_code == 201, created.text
    pid = created.json()["programme_id"]
    assert requests.post(f"{vou}/api/v1/programmes/{pid}/open", headers=officer, timeout=10).status_code == 200
    refresh_figures(vouchers)
    remaining = f'ipv_programme_budget_fen{{app="vouchers", programme="{pid}", bucket="remaining"}}'
    outstanding = f'ipv_vouchers_outstanding{{app="vouchers", programme="{pid}"}}'
    prom.wait_for(remaining, lambda v: v == 10_000_000)
    assert prom.value(outstanding) == 0

    deadline = time.monotonic() + 20
    while True:  # until the qualification event has reached the vouchers service's read model
        applied = requests.post(f"{vou}/api/v1/vouchers", json={"programme_id": pid},
                                headers=token("enterprise", CODE), timeout=10)
        if applied.status_code == 201 or time.monotonic() > deadline:
            break
        eventlet.sleep(0.25)
    assert applied.status_code == 201, applied.text
    refresh_figures(vouchers)
    prom.wait_for(remaining, lambda v: v == 8_000_000)
    assert prom.value(outstanding) == 1
    assert prom.value(f'ipv_programme_budget_fen{{app="vouchers", programme="{pid}", bucket="free"}}') == 2_000_000
    assert prom.value(f'ipv_programme_budget_total_fen{{app="vouchers", programme="{pid}"}}') == 10_000_000

    enterprises.stop()
    prom.wait_for('up{job="ipv-services", app="enterprises"}', lambda v: v == 0)
