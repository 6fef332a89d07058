"""Sign-in against the real Keycloak realm `ipv` (started by `make test`), and what the services make of
its tokens: each role signs in; five wrong passwords lock an account; staff without TOTP get no token;
bad tokens are a JSON 401; an enterprise's token opens nothing of another; a revoked session's refresh
token is dead; a signing key rotated in the realm is used by the services without a restart."""
import time
import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import requests

from ipvkit.auth import ROLES
from ipvkit.http import ServiceBase, api as route
from scripts.keycloak import KeycloakError, demo_users, totp
from services.enterprises.service import EnterprisesService
from tests.issuer import access_claims, forged, new_key

pytestmark = pytest.mark.integration

DEMO = {role: (username, org, password, otp) for username, role, org, password, otp in demo_users()}
OTHER_ENTERPRISE = "91310115MA1K3YJ15R"


class WhoAmI(ServiceBase):
    name = "whoami"

    @route("GET", "/api/v1/whoami", roles=ROLES)
    def whoami(self, call):
        return call.principal.as_actor()


@pytest.fixture
def trusted_issuer(realm):
    # A short refetch bound so the rotation test need not wait long for the new key.
    return dict(realm.config, OIDC_JWKS_REFETCH_SECONDS=1)


@pytest.fixture
def whoami(container_factory, service_config):
    container_factory(WhoAmI, service_config).start()
    base = f"http://{service_config['WEB_SERVER_ADDRESS']}/api/v1/whoami"

    def call(token):
        return requests.get(base, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return call


def sign_in(realm, role):
    username, _, password, otp = DEMO[role]
    return realm.kc.sign_in(username, password, otp)


def new_user(realm, role, **kw):
    username = f"t-{role}-{uuid.uuid4().hex[:8]}"
    org = kw.pop("org", "91350100M000100Y43" if role == "enterprise" else "ag-test" if role == "agency" else None)
    uid = realm.kc.create_user(username, role, org=org, **kw)
    return username, uid


def refused(call):
    with pytest.raises(KeycloakError) as refusal:
        call()
    return refusal.value


@pytest.mark.parametrize("role", ROLES)
def test_each_role_signs_in_and_the_services_know_who_it_is(realm, whoami, role):
    answer = sign_in(realm, role)
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["iss"] == realm.issuer and (claims["aud"] == "ipv-api" or "ipv-api" in claims["aud"])
    assert claims["exp"] - claims["iat"] == 300  # short-lived access tokens
    username, org, _, _ = DEMO[role]
    got = whoami(answer["access_token"])
    assert got.status_code == 200, got.text
    assert got.json() == {"role": role, "id": org or username}


def test_five_wrong_passwords_lock_the_account(realm):
    username, uid = new_user(realm, "enterprise")
    password = realm.kc.local_password()

    def status():
        return realm.kc.admin("GET", f"/ipv/attack-detection/brute-force/users/{uid}")[1]

    for attempt in range(1, 6):
        time.sleep(1.1)  # slower than the realm's quick-login check, which locks rapid-fire guessing sooner
        error = refused(lambda: realm.kc.password_grant(username, "Wrong-password-1!"))
        assert error.status == 401
        assert status()["disabled"] is (attempt == 5), (attempt, status())
    assert status()["numFailures"] == 5
    error = refused(lambda: realm.kc.password_grant(username, password))  # the right one, too late
    assert error.body["error"] == "invalid_grant"


def test_staff_without_totp_get_no_token(realm):
    username, _ = new_user(realm, "officer")  # no TOTP credential set up
    error = refused(lambda: realm.kc.password_grant(username, realm.kc.local_password()))
    assert error.status == 401 and "TOTP" in error.body["error_description"]
    time.sleep(1.1)
    error = refused(lambda: realm.kc.password_grant(username, realm.kc.local_password(), "123456"))
    assert error.status == 401
    officer, _, password, otp = DEMO["officer"]
    time.sleep(1.1)
    error = refused(lambda: realm.kc.password_grant(officer, password))  # the demo officer, without the code
    assert error.status == 401


@pytest.fixture(scope="module")
def realm_key(realm):
    """A key the realm publishes but does not sign with (passive): tokens wrong in one way only."""
    key, kid, component = realm.add_rsa_key(active=False, priority=1)
    yield key, kid
    realm.remove_component(component)


def test_bad_tokens_are_a_json_401(realm, realm_key, whoami):
    key, kid = realm_key
    claims = access_claims(realm.issuer, "officer", "o1")
    old = datetime.now(timezone.utc) - timedelta(hours=1)
    cases = {
        "token expired": realm.mint(key, kid, access_claims(realm.issuer, "officer", "o1", now=old)),
        "Signature verification failed": realm.mint(new_key("RS256"), kid, claims),
        "does not publish": realm.mint(new_key("RS256"), "foreign-kid", claims),
        "algorithm 'none'": forged(claims, "none", kid),
        "Invalid issuer": realm.mint(key, kid, access_claims("http://127.0.0.1:1/realms/ipv", "officer", "o1")),
        "Audience doesn't match": realm.mint(key, kid, access_claims(realm.issuer, "officer", "o1", audience="account")),
    }
    assert whoami(realm.mint(key, kid, claims)).status_code == 200  # the key itself is good
    for reason, token in cases.items():
        answer = whoami(token)
        assert answer.status_code == 401, (reason, answer.text)
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json()["error"] == "unauthorized" and reason in answer.json()["message"], answer.json()


def test_a_token_naming_another_enterprise_sees_nothing_of_it(realm, container_factory, service_config):
    container_factory(EnterprisesService, service_config).start()
    base = f"http://{service_config['WEB_SERVER_ADDRESS']}/api/v1/enterprises"
    officer = {"Authorization": f"Bearer {realm.token('officer', 'o1')}"}
    registered = requests.post(base, headers=officer, timeout=10, json={
        "credit_code": OTHER_ENTERPRISE, "name": "上海浦江知识产权科技有限公司", "region": "310115",
        "industry": "I65", "size": "micro"})
    assert registered.status_code == 201, registered.text
    mine = {"Authorization": f"Bearer {sign_in(realm, 'enterprise')['access_token']}"}  # org 91350100M000100Y43
    for path in ("", "/qualifications", "/notifications"):
        answer = requests.get(f"{base}/{OTHER_ENTERPRISE}{path}", headers=mine, timeout=10)
        assert answer.status_code == 403, (path, answer.text)
        assert "上海浦江" not in answer.text
    assert requests.get(base, headers=mine, timeout=10).status_code == 403  # the list is staff's


def test_a_revoked_session_refresh_token_fails(realm):
    username, uid = new_user(realm, "agency")
    password = realm.kc.local_password()
    by_user = realm.kc.password_grant(username, password)
    by_admin = realm.kc.password_grant(username, password)
    assert realm.kc.refresh(by_user["refresh_token"])["access_token"]  # alive before
    # The person signs out (the realm's end-session endpoint) ...
    realm.kc.logout(by_user["refresh_token"])
    assert refused(lambda: realm.kc.refresh(by_user["refresh_token"])).body["error"] == "invalid_grant"
    # ... and an administrator ends every session of an account.
    realm.kc.admin("POST", f"/ipv/users/{uid}/logout")
    assert refused(lambda: realm.kc.refresh(by_admin["refresh_token"])).body["error"] == "invalid_grant"


def test_a_rotated_signing_key_is_used_without_restarting_the_service(realm, whoami):
    before = sign_in(realm, "agency")["access_token"]
    assert whoami(before).status_code == 200  # the service has the key set as it was
    _, kid, component = realm.add_rsa_key(active=True, priority=1000)
    try:
        rotated = realm.kc.password_grant(DEMO["enterprise"][0], DEMO["enterprise"][2])["access_token"]
        assert jwt.get_unverified_header(rotated)["kid"] == kid  # Keycloak signs with the new key now
        deadline = time.monotonic() + 10  # the service fetches an unknown key's set at most every second here
        while (answer := whoami(rotated)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert answer.status_code == 200, answer.text
        assert whoami(before).status_code == 200  # tokens signed by the old key stay good until they expire
    finally:
        realm.remove_component(component)
