"""Token checks of ipvkit.auth against an issuer of the tests' own (tests/issuer.py: keys made here, the
JWKS served on loopback); the same checks against the real Keycloak are in tests/integration/test_sign_in.py."""
import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization

from ipvkit.auth import LEEWAY_SECONDS, Principal, TokenVerifier, principal_from_header
from ipvkit.errors import Forbidden, Unauthorized, Unavailable
from tests.issuer import CERTS_PATH, LocalIssuer, access_claims, forged, new_key, public_jwk, sign


@pytest.fixture(scope="module")
def issuer():
    local = LocalIssuer().start()
    yield local
    local.stop()


@pytest.fixture
def verifier(issuer):
    return TokenVerifier(issuer.issuer, "ipv-api")


def bearer(token):
    return f"Bearer {token}"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_each_accepted_algorithm_maps_role_and_organisation(issuer, verifier, alg):
    assert principal_from_header(verifier, bearer(issuer.token("enterprise", "91350100M000100Y43", alg=alg))) \
        == Principal("enterprise", "91350100M000100Y43")
    assert principal_from_header(verifier, bearer(issuer.token("officer", "o1", alg=alg))) == Principal("officer", "o1")


def test_a_service_config_is_enough(issuer):
    config = dict(issuer.config)
    assert principal_from_header(config, bearer(issuer.token("agency", "ag-1"))) == Principal("agency", "ag-1")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer not.a.jwt", "Bearer a.b"])
def test_missing_or_garbled(verifier, header):
    with pytest.raises(Unauthorized):
        principal_from_header(verifier, header)


def test_expired_and_not_yet_valid_tokens_are_refused(issuer, verifier):
    old = datetime.now(timezone.utc) - timedelta(days=2)
    with pytest.raises(Unauthorized, match="expired"):
        principal_from_header(verifier, bearer(issuer.token("officer", "o1", now=old)))
    key, kid = issuer.keys["RS256"]
    claims = access_claims(issuer.issuer, "officer", "o1")
    claims["nbf"] = datetime.now(timezone.utc) + timedelta(hours=1)
    with pytest.raises(Unauthorized, match="not yet valid"):
        principal_from_header(verifier, bearer(sign(key, kid, "RS256", claims)))


def test_a_token_verified_before_is_still_refused_once_it_expires(issuer, verifier, monkeypatch):
    token = issuer.token("officer", "o1")
    assert principal_from_header(verifier, bearer(token)) == Principal("officer", "o1")
    assert principal_from_header(verifier, bearer(token)) == Principal("officer", "o1")   # from memory
    expires = verifier.claims(token)["exp"]
    monkeypatch.setattr("ipvkit.auth.time.time", lambda: expires + LEEWAY_SECONDS + 1)
    with pytest.raises(Unauthorized, match="expired"):
        principal_from_header(verifier, bearer(token))


def test_another_issuer_or_audience_is_refused(issuer, verifier):
    key, kid = issuer.keys["RS256"]
    for claims in (access_claims("http://elsewhere/realms/ipv", "officer", "o1"),
                   access_claims(issuer.issuer, "officer", "o1", audience="account")):
        with pytest.raises(Unauthorized):
            principal_from_header(verifier, bearer(sign(key, kid, "RS256", claims)))


def test_unsigned_hmac_and_foreign_key_tokens_are_refused(issuer, verifier):
    key, kid = issuer.keys["RS256"]
    claims = access_claims(issuer.issuer, "officer", "o1")
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(Unauthorized, match="algorithm 'none'"):
        principal_from_header(verifier, bearer(forged(claims, "none", kid)))
    with pytest.raises(Unauthorized, match="algorithm 'HS256'"):
        principal_from_header(verifier, bearer(forged(claims, "HS256", kid, public_pem)))
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        principal_from_header(verifier, bearer(sign(new_key("RS256"), kid, "RS256", claims)))
    with pytest.raises(Unauthorized, match="does not publish"):
        principal_from_header(verifier, bearer(sign(new_key("RS256"), "unknown-kid", "RS256", claims)))


def test_only_access_tokens_count(issuer, verifier):
    key, kid = issuer.keys["RS256"]
    claims = dict(access_claims(issuer.issuer, "officer", "o1"), typ="ID")
    with pytest.raises(Unauthorized, match="not an access token"):
        principal_from_header(verifier, bearer(sign(key, kid, "RS256", claims)))


def test_a_person_acts_in_exactly_one_role_and_an_organisation_role_needs_its_organisation(issuer, verifier):
    key, kid = issuer.keys["RS256"]

    def with_roles(roles, **extra):
        claims = dict(access_claims(issuer.issuer, "enterprise", "91350100M000100Y43"), **extra)
        claims["realm_access"] = {"roles": roles}
        return bearer(sign(key, kid, "RS256", claims))

    with pytest.raises(Forbidden, match="no role"):
        principal_from_header(verifier, with_roles(["offline_access"]))
    with pytest.raises(Forbidden, match="several roles"):
        principal_from_header(verifier, with_roles(["officer", "auditor"]))
    with pytest.raises(Forbidden, match="not bound to an organisation"):
        principal_from_header(verifier, with_roles(["enterprise"], org=""))


def test_a_rotated_key_is_fetched_but_unknown_keys_do_not_make_it_fetch_on_every_request(issuer):
    rotated, kid = new_key("ES256"), "rotated-1"
    token = bearer(sign(rotated, kid, "ES256", access_claims(issuer.issuer, "auditor", "a1")))
    patient = TokenVerifier(issuer.issuer, "ipv-api", refetch_seconds=3600)
    eager = TokenVerifier(issuer.issuer, "ipv-api", refetch_seconds=0)
    for verifier in (patient, eager):  # both have the key set as it was
        principal_from_header(verifier, bearer(issuer.token("auditor", "a1")))
    certs = issuer.dir / "realms/test" / CERTS_PATH
    published = json.loads(certs.read_text())
    certs.write_text(json.dumps({"keys": published["keys"] + [public_jwk(rotated, kid, "ES256")]}))
    try:
        with pytest.raises(Unauthorized, match="does not publish"):
            principal_from_header(patient, token)  # fetched moments ago: not again
        assert principal_from_header(eager, token) == Principal("auditor", "a1")
    finally:
        certs.write_text(json.dumps(published))


def test_an_unreachable_issuer_is_a_retry_later_not_a_refusal(issuer):
    verifier = TokenVerifier(issuer.issuer, "ipv-api", jwks_url="http://127.0.0.1:9/certs", timeout=1)
    with pytest.raises(Unavailable):
        principal_from_header(verifier, bearer(issuer.token("officer", "o1")))
