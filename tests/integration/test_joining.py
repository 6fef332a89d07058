"""How people and organisations join, against the real Keycloak: an enterprise person signs up at the
realm's registration page with the credit code, may then register only that enterprise, and acts for it
once an officer has verified it; an agency's person joins by an officer's invitation and must replace
the one-time password at the first sign-in; the first staff account comes from the bootstrap command."""
import uuid

import jwt
import pytest
import requests

from services.enterprises.service import EnterprisesService
from services.providers.service import ProvidersService
from tests.realm import Browser

pytestmark = pytest.mark.integration

CLAIMED = "91350100M000100Y43"
SOMEONE_ELSES = "91310115MA1K3YJ15R"
PASSWORD = "Join-test-2026!"


@pytest.fixture
def trusted_issuer(realm):
    return realm.config


@pytest.fixture
def with_realm_admin(service_config):
    """The services that change accounts are given the tooling client, as on a deployment."""
    import os
    secret = os.environ.get("IDENTITY_CLIENT_SECRET")
    if not secret:
        pytest.fail("IDENTITY_CLIENT_SECRET is not set: run the suite with `make test`")
    return dict(service_config, IDENTITY_CLIENT_SECRET=secret)


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def sign_up(realm, credit_code):
    username = f"join-{uuid.uuid4().hex[:8]}"
    browser = Browser(realm).start(registration=True)
    browser.submit({"username": username, "email": f"{username}@example.com", "firstName": "Min",
                    "lastName": "Chen", "password": PASSWORD, "password-confirm": PASSWORD,
                    "credit_code": credit_code})
    return username, browser


def test_sign_up_refuses_a_malformed_credit_code(realm):
    username, browser = sign_up(realm, "91350100M000100Y4I")  # I is not a GB 32100 character
    assert browser.code_tokens() is None
    assert "GB 32100-2015" in browser.text
    assert realm.kc.user_id(username) is None


def test_a_signed_up_enterprise_registers_only_its_own_code_and_acts_once_verified(
        realm, container_factory, with_realm_admin):
    container_factory(EnterprisesService, with_realm_admin).start()
    base = f"http://{with_realm_admin['WEB_SERVER_ADDRESS']}/api/v1/enterprises"
    username, browser = sign_up(realm, CLAIMED)
    tokens = browser.code_tokens()
    token = claims(tokens["access_token"])
    assert token["realm_access"]["roles"] == ["enterprise"] or "enterprise" in token["realm_access"]["roles"]
    assert token["credit_code"] == CLAIMED and "org" not in token
    mine = {"Authorization": f"Bearer {tokens['access_token']}"}
    body = {"name": "福州闽光精密制造有限公司", "region": "350102", "industry": "C34", "size": "small"}

    other = requests.post(base, headers=mine, json=dict(body, credit_code=SOMEONE_ELSES), timeout=10)
    assert other.status_code == 403, other.text
    registered = requests.post(base, headers=mine, json=dict(body, credit_code=CLAIMED), timeout=10)
    assert registered.status_code == 201, registered.text
    assert registered.json()["verified"] is False
    waiting = requests.get(f"{base}/{CLAIMED}/qualifications", headers=mine, timeout=10)
    assert waiting.status_code == 403 and "not verified" in waiting.json()["message"]
    assert requests.get(f"{base}/{CLAIMED}", headers=mine, timeout=10).json()["verified"] is False

    officer = {"Authorization": f"Bearer {realm.token('officer', 'o1')}"}
    check = {"method": "business_licence", "reference": "EBL-2026-000117"}
    verified = requests.post(f"{base}/{CLAIMED}/verification", headers=officer, json=check, timeout=10)
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True
    # The account's next token says whom it acts for; the services let it act.
    renewed = realm.kc.refresh(tokens["refresh_token"], client_id="ipv-portal")
    assert claims(renewed["access_token"])["org"] == CLAIMED
    acting = {"Authorization": f"Bearer {renewed['access_token']}"}
    assert requests.get(f"{base}/{CLAIMED}/qualifications", headers=acting, timeout=10).status_code == 200
    again = requests.post(f"{base}/{CLAIMED}/verification", headers=officer, json=check, timeout=10)
    assert again.status_code == 200  # repeatable: nothing verified twice
    assert requests.post(f"{base}/{CLAIMED}/verification", headers=mine, json=check, timeout=10).status_code == 403


def test_an_agency_person_joins_by_invitation_and_replaces_the_one_time_password(
        realm, container_factory, with_realm_admin):
    container_factory(ProvidersService, with_realm_admin).start()
    base = f"http://{with_realm_admin['WEB_SERVER_ADDRESS']}/api/v1/agencies"
    officer = {"Authorization": f"Bearer {realm.token('officer', 'o1')}"}
    agency = "91331021MA2H1PT0XL"
    registered = requests.post(base, headers=officer, timeout=10, json={
        "credit_code": agency, "name": "玉环明诚专利代理事务所", "kind": "patent", "licence_no": "33215",
        "region": "331021", "service_codes": ["PAT-01"], "contact": {"person": "陈律", "phone": "0576-87221234"}})
    assert registered.status_code == 201, registered.text
    email = f"chen-{uuid.uuid4().hex[:6]}@mingcheng.example"
    invited = requests.post(f"{base}/{agency}/invitations", headers=officer, json={"email": email}, timeout=10)
    assert invited.status_code == 201, invited.text
    invitation = invited.json()
    assert invitation["username"] == email and invitation["agency_id"] == agency
    enterprise = {"Authorization": f"Bearer {realm.token('enterprise', CLAIMED)}"}
    assert requests.post(f"{base}/{agency}/invitations", headers=enterprise, json={"email": "x@y.example"},
                         timeout=10).status_code == 403

    browser = Browser(realm).start()
    browser.submit({"username": email, "password": invitation["one_time_password"]})
    assert browser.code_tokens() is None and "password" in browser.text.lower()  # must choose a new one first
    new_password = "Agency-own-2026!"
    browser.submit({"password-new": new_password, "password-confirm": new_password})
    token = claims(browser.code_tokens()["access_token"])
    assert token["org"] == agency and "agency" in token["realm_access"]["roles"]
    assert "enterprise" not in token["realm_access"]["roles"]  # not the self-registration default


def test_the_first_officer_comes_from_the_bootstrap_command(realm):
    username = f"first-{uuid.uuid4().hex[:6]}"
    password = realm.kc.bootstrap_staff(username, "officer")
    uid = realm.kc.user_id(username)
    _, user, _ = realm.kc.admin("GET", f"/ipv/users/{uid}")
    assert set(user["requiredActions"]) == {"UPDATE_PASSWORD", "CONFIGURE_TOTP"}
    _, roles, _ = realm.kc.admin("GET", f"/ipv/users/{uid}/role-mappings/realm")
    assert [r["name"] for r in roles] == ["officer"]
    browser = Browser(realm).start()
    browser.submit({"username": username, "password": password})
    assert browser.code_tokens() is None  # a new password and TOTP come first
