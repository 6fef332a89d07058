"""Every `ipv_` metric of every service follows Prometheus naming (base units, `_seconds` histograms;
prometheus_client adds `_total` to counters itself) and keeps its labels bounded: no ids, and HTTP by
route template, not path."""
import importlib
import re
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY

from services.enterprises.service import EnterprisesService

ROOT = Path(__file__).resolve().parents[2]
# Label names that would carry one value per record (unbounded series).
ID_LABEL = re.compile(r"(^|_)(id|ids|path|url|subject|credit_code|enterprise|agency|voucher|order|claim|token)$")


def ipv_collectors():
    for path in sorted(ROOT.glob("services/*/service.py")):
        importlib.import_module(f"services.{path.parent.name}.service")  # registers its business metrics
    for collector, names in list(REGISTRY._collector_to_names.items()):
        if any(name.startswith("ipv_") for name in names):
            yield collector


def test_names_use_base_units_and_labels_carry_no_ids():
    collectors = list(ipv_collectors())
    assert {"ipv_http_request_duration_seconds", "ipv_programme_budget_fen", "ipv_agencies"} <= {
        c._name for c in collectors}
    for collector in collectors:
        name, kind, labels = collector._name, collector._type, collector._labelnames
        assert re.fullmatch(r"ipv_[a-z0-9_]+", name)
        if kind == "histogram":
            assert name.endswith("_seconds"), name
        assert not re.search(r"_(ms|milliseconds|yuan|minutes)$", name), name
        assert not [label for label in labels if ID_LABEL.search(label) and label != "programme"], (name, labels)


@pytest.mark.integration
def test_http_latency_is_labelled_by_route_template_and_no_created_series(container_factory, service_config, token):
    container_factory(EnterprisesService, service_config).start()
    base = f"http://{service_config['WEB_SERVER_ADDRESS']}"
    code = "91350100M000100Y43"
    assert requests.get(f"{base}/api/v1/enterprises/{code}", headers=token("officer", "o1"), timeout=5).status_code == 404
    text = requests.get(f"{base}/metrics", timeout=5).text
    assert ('ipv_http_request_duration_seconds_count{method="GET",route="/api/v1/enterprises/<enterprise_id>",'
            'service="enterprises",status="404"}') in text
    assert code not in text and "_created" not in text
