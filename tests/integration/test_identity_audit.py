"""Sign-in events reach the audit ledger: the audit service reads Keycloak's events (the real realm) with
the tooling client and appends sign-ins, failures, the lockout and role changes, each exactly once."""
import os
import time
import uuid
from collections import Counter

import pytest
import requests

from scripts.keycloak import KeycloakError
from services.audit.service import AuditService

pytestmark = pytest.mark.integration

TYPES = ("identity.signed_in", "identity.sign_in_failed", "identity.locked_out", "identity.role_changed",
         "identity.account_changed")


@pytest.fixture
def trusted_issuer(realm):
    return realm.config


def test_sign_ins_failures_the_lockout_and_role_changes_are_in_the_ledger_once(
        realm, container_factory, service_config, tmp_path):
    secret = os.environ.get("IDENTITY_CLIENT_SECRET") or pytest.fail("run the suite with `make test`")
    started_ms = int(time.time() * 1000) - 1000
    config = dict(service_config, AUDIT_SIGNING_KEY=str(tmp_path / "key.pem"), IDENTITY_CLIENT_SECRET=secret,
                  AUDIT_IDENTITY_SINCE_MS=started_ms)
    container_factory(AuditService, config).start()
    base = f"http://{config['WEB_SERVER_ADDRESS']}/api/v1/audit"
    auditor = {"Authorization": f"Bearer {realm.token('auditor', 'a1')}"}

    username = f"trail-{uuid.uuid4().hex[:8]}"
    uid = realm.kc.create_user(username, "enterprise", org="91350100M000100Y43")  # granted, default dropped
    realm.kc.set_only_role(uid, "agency")                                           # agency granted, enterprise revoked
    realm.kc.password_grant(username, realm.kc.local_password())
    for _ in range(5):
        time.sleep(1.1)  # slower than the quick-login check, so the count is the one that locks
        with pytest.raises(KeycloakError):
            realm.kc.password_grant(username, "Not-the-password-1!")

    def trail():
        seen = Counter()
        for kind in TYPES:
            answer = requests.get(f"{base}/entries", params={"type": kind, "limit": 500}, headers=auditor, timeout=10)
            assert answer.status_code == 200, answer.text
            seen.update(e["type"] for e in answer.json()["items"] if e["event"]["data"].get("user_id") == uid)
        return seen

    expected = Counter({"identity.signed_in": 1, "identity.sign_in_failed": 5, "identity.locked_out": 1,
                        "identity.role_changed": 4, "identity.account_changed": 1})
    deadline = time.monotonic() + 40
    while (got := trail()) != expected and time.monotonic() < deadline:
        time.sleep(1)
    assert got == expected
    time.sleep(11)  # two more reads of the same Keycloak events
    assert trail() == expected
    failed = requests.get(f"{base}/entries", params={"type": "identity.sign_in_failed", "limit": 500},
                          headers=auditor, timeout=10).json()["items"]
    mine = [e["event"] for e in failed if e["event"]["data"]["user_id"] == uid]
    assert {e["data"]["error"] for e in mine} <= {"invalid_user_credentials", "user_temporarily_disabled"}
    assert all(e["producer"] == "identity" and e["data"]["username"] == username for e in mine)
    verified = requests.get(f"{base}/verify", headers=auditor, timeout=30)
    assert verified.status_code == 200 and verified.json()["ok"] is True, verified.text
