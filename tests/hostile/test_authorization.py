"""Every route of every service × every role, no token and bad tokens, and, where a route has an
owner, the owner vs someone else: the answer follows the route's declared `roles`."""
import re
from datetime import datetime, timedelta, timezone

import pytest

from ipvkit.auth import ROLES, issue_token
from tests.conftest import SECRET
from tests.hostile.conftest import SERVICES, api_routes
from tests.hostile.profiles import Seed, profile

pytestmark = pytest.mark.integration

BAD_TOKENS = {
    "no token": {},
    "not a JWT": {"Authorization": "Bearer not-a-token"},
    "other secret": {"Authorization": "Bearer " + issue_token("someone-elses-secret", "officer", "o1")},
    "expired": {"Authorization": "Bearer " + issue_token(SECRET, "officer", "o1",
                                                         now=datetime.now(timezone.utc) - timedelta(days=2))},
    "not bearer": {"Authorization": "Basic b2ZmaWNlcjpvMQ=="},
}
WITH_ROUTES = sorted(name for name, cls in SERVICES.items() if api_routes(cls))


def path_params(url):
    return [name for _, name in re.findall(r"<(?:([^:<>]+):)?([^<>]+)>", url)]


def placeholder(url, name):
    """A value that reaches the route: werkzeug's int converter matches digits only."""
    return "1" if f"<int:{name}>" in url else "x-none"


def fill(url, values):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values[m.group(1)], url)


def owned(owners, role, method, url):
    """Does this route have a record owned by `role`, and where is the owner named?"""
    rule = owners.get(role)
    if not rule:
        return None
    if rule.get("path") in path_params(url):
        return "path"
    if method in rule.get("body", {}):
        return "body"
    return None


@pytest.mark.parametrize("service", WITH_ROUTES)
def test_every_route_answers_every_principal_as_its_roles_say(start_service, service):
    _, client = start_service(service)
    prof = profile(service)
    seed = prof.seed(client) if prof.seed else Seed()
    wrong, checked = [], 0

    def request(method, handler, role, subject, owner_id, headers=None):
        values = {name: seed.path.get(name, placeholder(handler.url, name)) for name in path_params(handler.url)}
        for r, rule in prof.owners.items():
            if rule.get("path") in values:
                values[rule["path"]] = owner_id if r == role and owner_id else seed.own.get(r, "x-none")
        body = None
        if handler.body_schema is not None:
            body = prof.bodies[method](owner_id) if method in prof.bodies else {}
        return client(handler.method, fill(handler.url, values), role=role, subject=subject, json=body,
                      headers=headers)

    for method, handler in api_routes(SERVICES[service]):
        where = f"{handler.method} {handler.url}"
        for label, headers in BAD_TOKENS.items():
            status = request(method, handler, None, None, None, headers=headers).status_code
            checked += 1
            if status != 401:
                wrong.append(f"{where} with {label}: {status}, expected 401")
        for role in ROLES:
            subject = seed.own.get(role, f"{role}-1")
            owner = subject if owned(prof.owners, role, method, handler.url) else None
            status = request(method, handler, role, subject, owner).status_code
            checked += 1
            if role not in handler.roles:
                if status != 403:
                    wrong.append(f"{where} as {role}: {status}, expected 403 (roles: {handler.roles})")
                continue
            if status in (401, 403) or (status >= 500 and status != 503):   # 503: a dependency is down
                wrong.append(f"{where} as {role} on its own record: {status}, expected it allowed")
            if owner:
                status = request(method, handler, role, subject, seed.other.get(role, f"{role}-2")).status_code
                checked += 1
                # Without a valid body from the profile the body check may refuse first: still refused.
                refused = (403,) if method in prof.bodies or handler.body_schema is None else (400, 403)
                if status not in refused:
                    wrong.append(f"{where} as {role} on someone else's record: {status}, expected 403")
    assert checked >= len(api_routes(SERVICES[service])) * (len(ROLES) + len(BAD_TOKENS))
    assert not wrong, "\n".join(wrong)
