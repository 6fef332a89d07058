"""schemathesis against each service's own served OpenAPI document, with a valid token of a role
each route allows: no 5xx but a 503 for a dependency that is down (in this test, another service a
route asks over RPC is not running), and every answer matches the document (status, content type,
body).

Bounded: IPV_FUZZ_EXAMPLES examples per operation and generation mode (default 15) keeps the
whole suite fast; raise it for a deeper run, e.g. IPV_FUZZ_EXAMPLES=300 make test PYTEST_ARGS=tests/hostile/test_fuzz.py
"""
import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

from ipvkit.openapi import openapi_path
from tests.hostile.conftest import SERVICES, api_routes
from tests.hostile.profiles import Seed, profile

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("IPV_FUZZ_EXAMPLES", "15"))


@schemathesis.check
def not_a_bug(ctx, response, case):
    """A 5xx is a bug, except the documented 503: the database or a service it asks is down."""
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


@schemathesis.check
def invalid_data_refused(ctx, response, case):
    """schemathesis's negative_data_rejection, with 413 (a body over 64 KiB) also a refusal."""
    if response.status_code != 413:
        return negative_data_rejection(ctx, response, case)
    return None


CHECKS = {schemathesis.GenerationMode.POSITIVE: [not_a_bug, status_code_conformance, content_type_conformance,
                                                 response_schema_conformance],
          schemathesis.GenerationMode.NEGATIVE: [not_a_bug, status_code_conformance, content_type_conformance,
                                                 response_schema_conformance, invalid_data_refused]}
# No .schemathesis/ cache in the checkout: a failure is reported with its request right here. The test
# sends a valid token itself (missing and bad tokens are the authorization matrix's job), so cases whose
# only negation is a dropped Authorization header are not generated: the token would make them valid.
NO_CACHE = SchemathesisConfig.from_dict({"cache": {"enabled": False},
                                         "generation": {"with-security-parameters": False}})
WITH_ROUTES = sorted(name for name, cls in SERVICES.items() if api_routes(cls))


@pytest.mark.parametrize("service", WITH_ROUTES)
def test_fuzzed_requests_never_get_a_5xx_and_every_answer_matches_the_document(start_service, token, service):
    _, client = start_service(service)
    prof = profile(service)
    seed = prof.seed(client) if prof.seed else Seed()
    document = requests.get(client.base + "/api/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document, config=NO_CACHE)
    roles = {(h.method, openapi_path(h.url)): h.roles for _, h in api_routes(SERVICES[service])}
    known = dict(seed.path, **{f"{role}_id": subject for role, subject in seed.own.items()})
    session = requests.Session()
    failures = []

    for result in schema.get_all_operations():
        operation = result.ok()
        allowed = roles[(operation.method.upper(), operation.path)]
        for mode, checks in CHECKS.items():
            @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(mode), role=st.sampled_from(allowed), real_ids=st.booleans())
            def run(case, role, real_ids):
                if real_ids:  # half the calls act on records that exist, to get past the 404s
                    for name in case.path_parameters or {}:
                        case.path_parameters[name] = known.get(name, case.path_parameters[name])
                # The seeded owner: each subject is a real user of the realm, made once, not one per example.
                subject = seed.own.get(role, f"{role}-1")
                case.call_and_validate(base_url=client.base, session=session, headers=token(role, subject),
                                       checks=checks)
            try:
                run()
            except Unsatisfiable:  # nothing the caller sends can be made invalid (no parameters, no body)
                assert mode is schemathesis.GenerationMode.NEGATIVE, f"{operation.method} {operation.path}"
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


def test_every_route_documents_what_it_answers_so_the_fuzzing_can_check_it():
    undocumented = [f"{service} {h.method} {h.url}" for service, cls in SERVICES.items()
                    for _, h in api_routes(cls) if h.response_schema is None and not h.other_types]
    assert not undocumented, undocumented
