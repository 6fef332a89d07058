"""scripts/demo.py waits out rules by name: each must be one the services can return."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_rule_the_demo_retries_on_is_a_rule_the_api_returns():
    demo = (ROOT / "scripts/demo.py").read_text()
    waited = {rule for group in re.findall(r"retry_rules=\(([^)]*)\)", demo) for rule in re.findall(r'"(\w+)"', group)}
    code = "".join(p.read_text() for p in ROOT.glob("services/*/*.py"))
    returned = set(re.findall(r'RuleRefused\(\s*"(\w+)"', code))
    assert waited and waited <= returned, waited - returned
