"""Every route of every service × every role, no token and bad tokens, and, where a route has an
owner, the owner vs someone else: the answer follows the route's declared `roles`. The tokens are the
Keycloak realm's, issued to real users; the bad ones are each wrong in one way only."""
import re
from datetime import datetime, timedelta, timezone

import pytest

from cryptography.hazmat.primitives import serialization

from ipvkit.auth import ROLES
from tests.hostile.conftest import SERVICES, api_routes
from tests.hostile.profiles import Seed, profile
from tests.issuer import access_claims, forged, new_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def realm_key(realm):
    """A key the realm publishes but does not sign with (passive), so a token can be wrong in one way
    only: expired, another audience, another issuer."""
    key, kid, component = realm.add_rsa_key(active=False, priority=1)
    yield key, kid
    realm.remove_component(component)


@pytest.fixture(scope="module")
def bad_tokens(realm, realm_key):
    key, kid = realm_key
    old = datetime.now(timezone.utc) - timedelta(days=2)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = access_claims(realm.issuer, "officer", "o1")
    tokens = {
        "not a JWT": "not-a-token",
        "expired": realm.mint(key, kid, access_claims(realm.issuer, "officer", "o1", now=old)),
        "another audience": realm.mint(key, kid, access_claims(realm.issuer, "officer", "o1", audience="account")),
        "another issuer": realm.mint(key, kid, access_claims("http://127.0.0.1:1/realms/ipv", "officer", "o1")),
        "a key the realm does not publish": realm.mint(new_key("RS256"), kid, claims),
        "alg none": forged(claims, "none", kid),
        "HS256 keyed with the realm's public key": forged(claims, "HS256", kid, public_pem),
    }
    headers = {label: {"Authorization": f"Bearer {value}"} for label, value in tokens.items()}
    return dict(headers, **{"no token": {}, "not bearer": {"Authorization": "Basic b2ZmaWNlcjpvMQ=="}})
WITH_ROUTES = sorted(name for name, cls in SERVICES.items() if api_routes(cls))


def path_params(url):
    return [name for _, name in re.findall(r"<(?:([^:<>]+):)?([^<>]+)>", url)]


def placeholder(url, name):
    """A value that reaches the route: werkzeug's int converter matches digits only."""
    return "1" if f"<int:{name}>" in url else "x-none"


def fill(url, values):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values[m.group(1)], url)


def owned(prof, seed, role, method, url):
    """Does this route act on a record `role` owns: named by the owner's id in the path or body, or
    by one of the owner's records (seed.records)?"""
    rule = prof.owners.get(role, {})
    params = path_params(url)
    return (rule.get("path") in params or method in rule.get("body", {})
            or any(p in params for p in seed.records.get(role, {})))


@pytest.mark.parametrize("service", WITH_ROUTES)
def test_every_route_answers_every_principal_as_its_roles_say(start_service, bad_tokens, service):
    _, client = start_service(service)
    prof = profile(service)
    seed = prof.seed(client) if prof.seed else Seed()
    wrong, checked, others = [], 0, 0

    def owner_of(role, target):
        return (seed.own if target == "own" else seed.other).get(role, f"{role}-{1 if target == 'own' else 2}")

    def request(method, handler, role, target, headers=None):
        """target: "own" or "other" record of `role`, or None (any record: a staff role)."""
        values = {name: seed.path.get(name, placeholder(handler.url, name)) for name in path_params(handler.url)}
        for r, rule in prof.owners.items():
            if rule.get("path") in values:
                values[rule["path"]] = owner_of(r, target if r == role and target else "own")
        for param, (own, other) in seed.records.get(role, {}).items():
            if param in values and target:
                values[param] = own if target == "own" else other
        body = None
        if handler.body_schema is not None:
            body = prof.bodies[method](owner_of(role, target) if target else None) if method in prof.bodies else {}
        subject = owner_of(role, "own") if role else None
        return client(handler.method, fill(handler.url, values), role=role, subject=subject, json=body,
                      headers=headers)

    for method, handler in api_routes(SERVICES[service]):
        where = f"{handler.method} {handler.url}"
        for label, headers in bad_tokens.items():
            status = request(method, handler, None, None, headers=headers).status_code
            checked += 1
            if status != 401:
                wrong.append(f"{where} with {label}: {status}, expected 401")
        for role in ROLES:
            has_owner = owned(prof, seed, role, method, handler.url)
            status = request(method, handler, role, "own" if has_owner else None).status_code
            checked += 1
            if role not in handler.roles:
                if status != 403:
                    wrong.append(f"{where} as {role}: {status}, expected 403 (roles: {handler.roles})")
                continue
            if status in (401, 403) or (status >= 500 and status != 503):   # 503: a dependency is down
                wrong.append(f"{where} as {role} on its own record: {status}, expected it allowed")
            if has_owner:
                status = request(method, handler, role, "other").status_code
                checked, others = checked + 1, others + 1
                # Without a valid body from the profile the body check may refuse first: still refused.
                refused = (403,) if method in prof.bodies or handler.body_schema is None else (400, 403)
                if status not in refused:
                    wrong.append(f"{where} as {role} on someone else's record: {status}, expected 403")
    assert checked >= len(api_routes(SERVICES[service])) * (len(ROLES) + len(bad_tokens))
    assert others or not (seed.own or seed.records), "the profile seeds records but no route was tried on someone else's"
    print(f"{service}: {checked} requests, {others} on someone else's record")
    assert not wrong, "\n".join(wrong)
