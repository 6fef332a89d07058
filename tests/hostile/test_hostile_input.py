"""Hostile requests against every route of every service, generated from the code (routes from the
`api` entrypoints, fields from their body and query schemas): malformed and ambiguous JSON, wrong
content types, odd Unicode and control characters in every text field, query parameter and path
parameter, header abuse. Each answer is a JSON 4xx in the documented error shape that names the
problem, never a 5xx, and nothing is stored."""
import json
import re

import pytest
from marshmallow import fields
from pymongo import MongoClient

from ipvkit.http import WRITE_METHODS
from ipvkit.strictjson import MAX_DEPTH, MAX_MEMBERS
from ipvkit.text import Text
from tests.hostile.conftest import SERVICES, api_routes

pytestmark = pytest.mark.integration

WITH_ROUTES = sorted(name for name, cls in SERVICES.items() if api_routes(cls))
# NUL, ESC, a C1 control (NEL), DEL, RIGHT-TO-LEFT OVERRIDE, RIGHT-TO-LEFT ISOLATE, a lone surrogate
BAD_CHARACTERS = ["\x00", "\x1b", "\x85", "\x7f", "\u202e", "\u2067", "\ud800"]
DEEP = b"[" * 10_000 + b"]" * 10_000
TIMERS_WRITE = {"ledger_meta"}   # the audit projector's cursor, created by its timer whatever the requests do


def string_fields(schema, prefix=""):
    """Dotted paths (list items as .0) of every string field of a schema, nested ones included,
    with the field."""
    found = []
    for name, field in schema().fields.items():
        key = field.data_key or name
        found += _strings(field, f"{prefix}{key}")
    return found


def _strings(field, path):
    if isinstance(field, fields.String):
        return [(path, field)]
    if isinstance(field, fields.Nested):
        return string_fields(type(field.schema), path + ".")
    if isinstance(field, fields.List):
        return _strings(field.inner, path + ".0")
    return []


def placed(path, value):
    """A body holding `value` at a dotted path (`a.0.b` -> {"a": [{"b": value}]})."""
    head, _, rest = path.partition(".")
    if not rest:
        return {head: value}
    inner = placed(rest, value)
    if rest.split(".")[0] == "0":
        inner = [inner["0"]]
    return {head: inner}


def named(fields_, path):
    """Does an error's `fields` name `path` (flat dotted keys, or marshmallow's nesting)?"""
    if path in fields_:
        return True
    node = fields_
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class Checker:
    """Sends requests to one service as a role the route allows; collects every wrong answer."""

    def __init__(self, client):
        self.client = client
        self.failures = []

    def __call__(self, label, handler, path, status, names=None, **kwargs):
        role = handler.roles[0] if handler.roles else None
        # One subject per role: the realm keeps the role a staff username was first created with.
        response = self.client(handler.method, path, role, f"hostile-{role}", **kwargs)
        where = f"{handler.method} {handler.url} {label}"
        if response.headers.get("Content-Type") != "application/json":
            self.failures.append(f"{where}: {response.status_code} {response.headers.get('Content-Type')}")
            return
        try:
            body = response.json()
        except ValueError:
            self.failures.append(f"{where}: {response.status_code} answer is not JSON")
            return
        if response.status_code != status or not isinstance(body.get("error"), str) or not body.get("message"):
            self.failures.append(f"{where}: {response.status_code} {response.text[:300]} (wanted {status})")
        elif names is not None and not named(body.get("fields", {}), names):
            self.failures.append(f"{where}: does not name {names}: {response.text[:300]}")


def path_of(handler, value="x"):
    return re.sub(r"<(?:([^:<>]+):)?([^<>]+)>", lambda m: "1" if m.group(1) == "int" else value, handler.url)


def body_cases(schema):
    """(label, raw body, content type, status, field named) for one body schema."""
    first = next(iter(schema().fields.values()))
    key = first.data_key or first.name
    ok_type = "application/json"
    many = "{" + ",".join(f'"k{n}":1' for n in range(MAX_MEMBERS + 1)) + "}"
    return [
        ("10,000 nested arrays", DEEP, ok_type, 400, None),
        ("nesting inside a field", b'{"%s": %s}' % (key.encode(), DEEP), ok_type, 400, None),
        (f"{MAX_DEPTH + 1} nested objects", b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), ok_type,
         400, None),
        ("a duplicate key", b'{"%s": 1, "%s": 2}' % (key.encode(), key.encode()), ok_type, 400, key),
        ("NaN", b'{"%s": NaN}' % key.encode(), ok_type, 400, None),
        ("Infinity", b'{"%s": -Infinity}' % key.encode(), ok_type, 400, None),
        ("a float overflowing to infinity", b'{"%s": 1e999}' % key.encode(), ok_type, 400, None),
        ("a 5,000-digit integer", b'{"%s": %s}' % (key.encode(), b"9" * 5000), ok_type, 400, None),
        ("an invalid number", b'{"%s": 01}' % key.encode(), ok_type, 400, None),
        ("a byte order mark", b"\xef\xbb\xbf{}", ok_type, 400, None),
        ("bytes that are not UTF-8", b'{"%s": "\xff\xfe"}' % key.encode(), ok_type, 400, None),
        ("UTF-16", "{}".encode("utf-16"), ok_type, 400, None),
        ("a lone surrogate in a key", b'{"\\udc00": 1}', ok_type, 400, "\\udc00"),
        ("an empty body", b"", ok_type, 400, None),
        ("whitespace only", b" \n ", ok_type, 400, None),
        ("an array", b"[]", ok_type, 400, None),
        ("a string", b'"x"', ok_type, 400, None),
        ("null", b"null", ok_type, 400, None),
        (f"{MAX_MEMBERS + 1} keys", many.encode(), ok_type, 400, None),
        ("truncated JSON", b'{"%s": "x' % key.encode(), ok_type, 400, None),
        ("text/plain", b"{}", "text/plain", 415, None),
        ("form-encoded", b"a=1", "application/x-www-form-urlencoded", 415, None),
        ("no content type", b"{}", None, 415, None),
        ("JSON in Latin-1", b"{}", "application/json; charset=latin-1", 415, None),
        ("another JSON-ish type", b"{}", "application/json-patch+json", 415, None),
        # The one accepted spelling with a charset: gets as far as the schema (an unknown field).
        ("charset=utf-8 accepted", b'{"surely_unknown": 1}', "application/json; charset=UTF-8", 400, "surely_unknown"),
    ]


@pytest.mark.parametrize("service", WITH_ROUTES)
def test_hostile_requests_get_a_json_4xx_naming_the_problem_and_store_nothing(start_service, mongo_uri, service):
    container, client = start_service(service)
    db = MongoClient(mongo_uri)[container.config["MONGO_DB"]]

    def stored():
        return {name: db[name].count_documents({}) for name in db.list_collection_names() if name not in TIMERS_WRITE}
    before = stored()
    check = Checker(client)
    for _, handler in api_routes(SERVICES[service]):
        path = path_of(handler)
        if handler.body_schema is not None:
            for label, raw, content_type, status, field in body_cases(handler.body_schema):
                headers = {"Content-Type": content_type} if content_type else {}
                check(label, handler, path, status, field, data=raw, headers=headers)
            for field_path, field in string_fields(handler.body_schema):
                for char in BAD_CHARACTERS + ([] if getattr(field, "multiline", False) else ["\n", "\t"]):
                    check(f"{field_path} holding U+{ord(char):04X}", handler, path, 400, field_path,
                          json=placed(field_path, f"ab{char}cd"))
        if handler.query_schema is not None:
            query_fields = string_fields(handler.query_schema)
            for name, _ in query_fields:
                for char in ["%00", "%1B", "%C2%85", "%E2%80%AE", "%E2%81%A7", "%0A"]:
                    check(f"query {name}={char}", handler, f"{path}?{name}=ab{char}cd", 400, name)
            name = next(iter(handler.query_schema().fields))
            check("a query parameter twice", handler, f"{path}?{name}=1&{name}=2", 400, name)
            check("a query string not UTF-8", handler, f"{path}?{name}=%FF", 400, "query")
        for name in re.findall(r"<([^:<>]+)>", handler.url):
            for char in ["%00", "%1B", "%E2%80%AE", "%E2%81%A6"]:
                check(f"path {name} holding {char}", handler, path_of(handler, f"ab{char}cd"), 400, name)
            check(f"path {name} not UTF-8", handler, path_of(handler, "ab%FFcd"), 400, "path")
        if handler.method in WRITE_METHODS and handler.roles:
            for key in ("k" * 129, "key with spaces", "ключ"):
                check(f"Idempotency-Key {key[:12]!r}", handler, path, 400, "Idempotency-Key",
                      json={}, headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
    assert not check.failures, f"{len(check.failures)} wrong answers:\n" + "\n".join(check.failures)
    assert stored() == before


def test_every_text_field_of_every_api_schema_is_the_kits_text_field():
    """One rule in one place: a plain marshmallow String in a body or query schema would let
    control characters, bidirectional overrides and (with a Regexp's `$`) a trailing newline in."""
    plain = []
    for service, cls in SERVICES.items():
        for _, handler in api_routes(cls):
            for schema in (handler.body_schema, handler.query_schema):
                if schema is not None:
                    plain += [f"{service} {schema.__name__}.{path}" for path, field in string_fields(schema)
                              if type(field) is fields.String]
    assert not plain, plain
    assert issubclass(Text, fields.String)


def test_what_the_hostile_bodies_are_made_of():
    assert placed("tiers.0.tier", 1) == {"tiers": [{"tier": 1}]}
    assert placed("contact.person", 1) == {"contact": {"person": 1}}
    assert named({"tiers": {"0": {"tier": ["x"]}}}, "tiers.0.tier")
    assert not named({"tiers": {"1": {"tier": ["x"]}}}, "tiers.0.tier")
    assert json.loads(DEEP.decode()[:2] + "]]") == [[]]


def test_a_correlation_id_that_is_not_a_plain_token_is_replaced_not_echoed_or_logged(start_service):
    _, client = start_service("enterprises")
    kept = client("GET", "/api/v1/enterprises", "officer", "o1", headers={"X-Correlation-Id": "req-42.a:b"})
    assert kept.status_code == 200 and kept.headers["X-Correlation-Id"] == "req-42.a:b"
    for sent in ("c" * 129, "two words", "é".encode("utf-8").decode("latin-1"), "a\tb", ""):
        answer = client("GET", "/api/v1/enterprises", "officer", "o1", headers={"X-Correlation-Id": sent})
        assert answer.status_code == 200
        assert re.fullmatch(r"[0-9a-f-]{36}", answer.headers["X-Correlation-Id"]), answer.headers
