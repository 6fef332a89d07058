"""The alert rules: valid for Prometheus, each one unit-tested firing and quiet with `promtool test rules`,
each pointing at a runbook section that exists, and each `ipv_` metric they read exported by the code."""
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/k8s/base/monitoring/alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts.test.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args):
    done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def alerts():
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_rules_and_local_scrape_config_pass_promtool_checks():
    assert f"SUCCESS: {len(alerts())} rules found" in promtool("check", "rules", str(RULES))
    promtool("check", "config", str(ROOT / "deploy/prometheus/local.yml"))


def test_every_alert_has_a_firing_and_a_quiet_promtool_test():
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired, quiet = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names == {"ServiceDown", "HighErrorRatio", "OutboxBacklogGrowing", "DeadLettersPresent", "DeadLettering",
                     "ConsumerLag", "ProgrammeBudgetLow", "AuditLedgerTampered", "AuditReadModelsBehind",
                     "DocumentStorageErrors"}
    assert names <= fired and names <= quiet
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))


def test_every_runbook_link_names_a_section_of_the_operations_guide():
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in (ROOT / "docs/operations.md").read_text().splitlines() if line.startswith("#")}
    for rule in alerts():
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor in headings, rule["alert"]


def test_every_ipv_metric_an_alert_reads_is_defined_in_the_code():
    defined = set()
    for source in [ROOT / "ipvkit/metrics.py", *ROOT.glob("services/*/*.py")]:
        defined |= set(re.findall(r"""["'](ipv_[a-z0-9_]+)["']""", source.read_text()))
    for rule in alerts():
        for name in re.findall(r"\bipv_[a-z0-9_]+", rule["expr"]):
            base = re.sub(r"_(count|sum|bucket)$", "", name)
            assert name in defined or base in defined, f"{rule['alert']} reads {name}, which no service exports"
