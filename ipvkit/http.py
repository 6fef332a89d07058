"""HTTP entrypoints: JSON in and out, bearer-token roles, marshmallow validation with field-level
errors, `Idempotency-Key` on writes, latency metrics, and the route table OpenAPI is built from.

    @api("POST", "/api/v1/things", roles=("officer",), body=ThingIn, response=ThingOut, status=201)
    def create_thing(self, call):   # call.principal, call.body, call.query, call.path
        ...
        return thing_dict              # or (status, dict)
"""
import hashlib
import json
import logging
import re
import time
import uuid
from collections import Counter
from functools import partial
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from urllib.parse import parse_qsl

from eventlet import wsgi
from eventlet.event import Event
from kombu import Connection
from marshmallow import ValidationError
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from pymongo.errors import ConnectionFailure, DuplicateKeyError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from ipvkit import logs, metrics, strictjson
from ipvkit.auth import principal_from_header, require_role, verifier_for
from ipvkit.clock import SystemClock
from ipvkit.consumer import EventConsumer
from ipvkit.errors import ApiError, BadRequest, Conflict, PayloadTooLarge, RuleRefused, UnsupportedMediaType
from ipvkit.schemas import schema_of
from ipvkit.events import new_event
from ipvkit.storage import IDEMPOTENCY, MongoStore
from ipvkit.text import printable, text_problem

log = logging.getLogger(__name__)


class _ClientErrorsAsInfo(logging.Filter):
    """nameko logs every exception a route raises with its traceback: an ApiError (a 4xx: the client's
    mistake or a rule, answered in JSON) at WARNING as "expected", which made every 404 and 409 look like
    a fault in the logs ops alert on. Kept as one INFO line with the reason, no traceback."""

    def filter(self, record):
        if record.exc_info and isinstance(record.exc_info[1], ApiError):
            record.levelno, record.levelname, record.exc_info, record.exc_text = logging.INFO, "INFO", None, None
        return True


logging.getLogger("nameko.containers").addFilter(_ClientErrorsAsInfo())

MAX_BODY_BYTES = 64 * 1024
PUBLIC = ()
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# What the event envelope accepts as a correlation id; anything else gets a fresh one.
CORRELATION_ID = IDEMPOTENCY_KEY
PENDING_TAKEOVER = timedelta(seconds=60)


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_response(status, payload, headers=None):
    try:
        body = json.dumps(payload, ensure_ascii=False, default=_json_default).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate got this far: \u escapes keep the answer valid JSON
        body = json.dumps(payload, ensure_ascii=True, default=_json_default).encode("ascii")
    return Response(body, status=status, headers=headers, mimetype="application/json")


def error_response(exc):
    return json_response(exc.status, exc.body())


INT64_MAX = 2**63 - 1


def _huge_integers(value, at=""):
    """Paths of integers the database cannot store (BSON int64): a query with one fails there."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [at] if abs(value) > INT64_MAX else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _huge_integers(v, f"{at}.{k}" if at else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _huge_integers(v, f"{at}.{i}" if at else str(i))]
    return []


def _refuse_huge_integers(data, where):
    huge = _huge_integers(data)
    if huge:
        raise BadRequest(f"invalid {where}", fields={p: [f"must lie within ±{INT64_MAX} (64-bit)"] for p in huge})


def _path_values(request):
    """The route's path parameters, refused unless UTF-8 text a person could have typed (werkzeug
    turns bytes that are not UTF-8 into U+FFFD, and lets %00 through)."""
    try:
        request.environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise BadRequest("the path is not UTF-8", fields={"path": ["not UTF-8"]})
    values = dict(request.path_values)
    problems = {name: [problem] for name, value in values.items()
                if isinstance(value, str) and (problem := text_problem(value))}
    if problems:
        raise BadRequest("invalid path", fields=problems)
    return values


def _query(request):
    """The query string as {name: value}: UTF-8 only, each name once (with `?a=1&a=2`, which one
    counts would depend on who reads it)."""
    try:
        pairs = parse_qsl(request.environ.get("QUERY_STRING", ""), keep_blank_values=True,
                          encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the query string is not UTF-8", fields={"query": ["not UTF-8"]})
    counts = Counter(name for name, _ in pairs)
    twice = sorted(name for name, n in counts.items() if n > 1)
    if twice:
        raise BadRequest("a query parameter appears more than once",
                         fields={printable(name): ["appears more than once"] for name in twice})
    return dict(pairs)


@dataclass
class Call:
    principal: object
    body: dict = None
    query: dict = field(default_factory=dict)
    path: dict = field(default_factory=dict)
    correlation_id: str = None
    idempotency_key: str = None  # role:subject:key when the request carries an Idempotency-Key
    request: object = None  # the werkzeug request, for a `stream=True` route that reads its own body

    def stable_hex(self, digits):
        """Hex digits for a new record's id: the same on every run of this request under one
        Idempotency-Key, so a run that takes over after a crash makes the same ids and finds what the
        first run did instead of doing it twice; random without a key."""
        if self.idempotency_key is None:
            return uuid.uuid4().hex[:digits]
        return hashlib.sha256(self.idempotency_key.encode()).hexdigest()[:digits]


def find_store(container):
    for dep in container.dependencies:
        if isinstance(dep, MongoStore):
            return dep
    return None


class _JsonWsgiApp(WsgiApp):
    """nameko answers a path no route matches (or a method the route does not take) with
    werkzeug's HTML page; the API promises JSON errors everywhere."""

    def __call__(self, environ, start_response):
        request = Request(environ, shallow=True)
        try:
            provider, values = self.url_map.bind_to_environ(environ).match()
            request.path_values = values
            response = provider.handle_request(request)
        except HTTPException as exc:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.code, "invalid_request")
            response = json_response(exc.code, {"error": code, "message": exc.description},
                                     headers=[h for h in exc.get_headers() if h[0] == "Allow"])
        return response(environ, start_response)


class _JsonProtocol(HttpOnlyProtocol):
    """eventlet answers a request it cannot read (request line or a header too long, a bad
    Content-Length, a malformed request line) with an empty or HTML body of its own, before any
    route sees it; the API promises JSON in its one error shape for every answer."""

    ERRORS = {400: "invalid_request", 414: "uri_too_long", 431: "headers_too_large", 505: "invalid_request"}

    def _json_error(self, status, message):
        body = json.dumps({"error": self.ERRORS.get(status, "invalid_request"), "message": message}).encode()
        self.wfile.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (status, self.responses.get(status, ("Error",))[0].encode(),
                                                            len(body), body))
        self.close_connection = 1

    def _read_request_line(self):
        line = super()._read_request_line()
        if len(line) >= self.server.url_length_limit:
            self._json_error(414, f"the request line is over {self.server.url_length_limit} bytes")
            return b""  # eventlet then closes the connection without its own answer
        return line

    def parse_request(self):
        try:
            parsed = super().parse_request()
        except (wsgi.HeaderLineTooLong, wsgi.HeadersTooLarge):
            self._json_error(431, "the request headers are too large")
            return False
        if not parsed:
            return False
        length = self.headers.get("content-length")
        if length is not None and not length.strip().isdigit():
            self._json_error(400, "Content-Length is not a non-negative integer")
            return False
        if length is not None and self.headers.get("transfer-encoding") is not None:
            self._json_error(400, "Content-Length and Transfer-Encoding are not allowed together")
            return False
        return True

    def send_error(self, code, message=None, explain=None):
        """http.server's answer to a malformed request line or version (an HTML page otherwise)."""
        self.log_error("code %d, message %s", code, message)
        self._json_error(code, "the request is malformed")


class _JsonWebServer(WebServer):
    def get_wsgi_app(self):
        return _JsonWsgiApp(self)

    def get_wsgi_server(self, sock, wsgi_app, protocol=_JsonProtocol, debug=False):
        return super().get_wsgi_server(sock, wsgi_app, protocol=protocol, debug=debug)


class ApiHandler(HttpRequestHandler):
    server = _JsonWebServer()  # every handler of a service must share it: OpsHandler too

    def __init__(self, method, url, *, roles, body=None, query=None, response=None, other_types=(), status=200,
                 summary="", unverified=False, stream=None, **kwargs):
        """`stream`: the schema of a multipart/form-data body whose fields the route reads itself from
        `call.request` (a file upload, never held whole in memory); the route then handles its own
        Idempotency-Key. `other_types`: media types the route may answer instead of JSON."""
        self.roles = tuple(roles)
        self.unverified = unverified  # also for enterprise accounts an officer has not verified yet
        self.body_schema = body
        self.query_schema = query
        self.response_schema = response
        self.other_types = tuple(other_types)  # media types the route may answer instead of JSON (CSV, NDJSON)
        self.status = status
        self.summary = summary
        self.stream_schema = stream
        kwargs.setdefault("expected_exceptions", ApiError)
        super().__init__(method, url, **kwargs)

    def setup(self):
        super().setup()
        self.verifier = verifier_for(self.container.config)
        self.clock = SystemClock()
        self.store = find_store(self.container)

    @property
    def route(self):
        return self.url

    def handle_request(self, request):
        request.shallow = False  # nameko's WSGI app makes it shallow for websockets; we read bodies
        started = time.perf_counter()
        correlation_id = request.headers.get("X-Correlation-Id", "")
        if not CORRELATION_ID.match(correlation_id):
            correlation_id = str(uuid.uuid4())
        # eventlet's WSGI server reuses a green thread for a keep-alive connection's requests.
        bound = logs.bind(correlation_id=correlation_id, route=f"{self.method} {self.url}")
        try:
            response = self._handle(request, correlation_id)
        except ApiError as exc:
            response = error_response(exc)
        except ConnectionFailure:  # the database is down or failing over: not a bug, and worth a retry
            log.warning("database unavailable in %s %s", self.method, self.url, exc_info=True)
            response = json_response(503, {"error": "unavailable", "message": "the database is unavailable; retry"},
                                     headers={"Retry-After": "1"})
        except Exception:  # a bug: say so without leaking internals
            log.exception("unhandled error in %s %s", self.method, self.url)
            response = json_response(500, {"error": "internal_error", "message": "internal error"})
        finally:
            logs.unbind(bound)
        metrics.HTTP_LATENCY.labels(self.container.service_name, self.method, self.url,
                                    str(response.status_code)).observe(time.perf_counter() - started)
        response.headers["X-Correlation-Id"] = correlation_id
        return response

    def _handle(self, request, correlation_id):
        principal = None
        if self.roles != PUBLIC:
            principal = principal_from_header(self.verifier, request.headers.get("Authorization"))
            require_role(principal, *self.roles, unverified=self.unverified)
        key = request.headers.get("Idempotency-Key") if self.method in WRITE_METHODS and principal else None
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            raise BadRequest("Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : -",
                             fields={"Idempotency-Key": ["invalid"]})
        call = Call(principal=principal, path=_path_values(request), correlation_id=correlation_id)
        _refuse_huge_integers(call.path, "path")
        call.query = self._load(self.query_schema, _query(request), "query")
        if self.stream_schema is not None:
            call.request = request
            return self._run(call)
        raw = b""
        if self.body_schema is not None:
            raw = self._read_body(request)
            call.body = self._load(self.body_schema, self._parse_json(raw, request), "body")
        if key is not None:
            return self._idempotent(call, key, raw, request)
        return self._run(call)

    def _run(self, call):
        result = self._spawn(call)
        if isinstance(result, Response):
            return result
        status, payload = result if isinstance(result, tuple) else (self.status, result)
        return json_response(status, payload)

    def _spawn(self, call):
        done = Event()
        context = {"correlation_id": call.correlation_id} if call.correlation_id else {}
        self.container.spawn_worker(self, (call,), {}, context_data=context,
                                    handle_result=partial(self.handle_result, done))
        return done.wait()

    @staticmethod
    def _read_body(request):
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
        raw = request.stream.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
        return raw

    @staticmethod
    def _parse_json(raw, request):
        if not raw.strip():
            raise BadRequest("a JSON body is required (Content-Type: application/json)")
        if request.mimetype != "application/json" or request.mimetype_params.get("charset", "utf-8").lower() != "utf-8":
            raise UnsupportedMediaType("the body must be sent as Content-Type: application/json (UTF-8)")
        try:
            data = strictjson.loads(raw)
        except strictjson.Refused as exc:
            raise BadRequest(exc.message, fields=exc.fields)
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        return data

    @staticmethod
    def _load(schema, data, where):
        if schema is None:
            return {}
        try:
            loaded = schema_of(schema).load(data)
        except ValidationError as exc:
            raise BadRequest(f"invalid {where}", fields=exc.messages)
        _refuse_huge_integers(loaded, where)
        return loaded

    # -- Idempotency-Key ---------------------------------------------------------------------
    def _idempotent(self, call, key, raw, request):
        keys = self.store.db[IDEMPOTENCY]
        now = self.clock.now()
        fingerprint = hashlib.sha256(b"%s %s\n%s" % (self.method.encode(), request.path.encode(), raw)).hexdigest()
        record_id = f"{call.principal.role}:{call.principal.id}:{key}"
        call.idempotency_key = record_id
        try:
            keys.insert_one({"_id": record_id, "fingerprint": fingerprint, "state": "pending", "created_at": now})
        except DuplicateKeyError:
            record = keys.find_one({"_id": record_id})
            if record is None or record["fingerprint"] != fingerprint:
                raise RuleRefused("idempotency_key_reused",
                                  "this Idempotency-Key was used for a different request")
            if record["state"] == "done":
                return json_response(record["status"], record["body"], headers={"Idempotent-Replayed": "true"})
            taken = keys.find_one_and_update(
                {"_id": record_id, "state": "pending", "created_at": {"$lt": now - PENDING_TAKEOVER}},
                {"$set": {"created_at": now}})
            if taken is None:
                raise Conflict("a request with this Idempotency-Key is still in progress; retry shortly")
        try:
            response = self._run(call)
        except ApiError as exc:
            # A refused request changed nothing, so there is no effect to protect: the key is freed and
            # a retry is judged afresh (once the record it needed exists, say).
            keys.delete_one({"_id": record_id, "state": "pending"})
            return error_response(exc)
        except Exception:
            keys.delete_one({"_id": record_id, "state": "pending"})
            raise
        keys.update_one({"_id": record_id}, {"$set": {
            "state": "done", "status": response.status_code, "body": json.loads(response.get_data())}})
        return response


api = ApiHandler.decorator


class OpsHandler(HttpRequestHandler):
    """`/healthz`, `/readyz`, `/metrics` and the OpenAPI document: answered by the entrypoint
    itself, without a worker, so they still answer when every worker is busy."""

    server = ApiHandler.server

    def __init__(self, method, url, kind, **kwargs):
        self.kind = kind
        super().__init__(method, url, **kwargs)

    def handle_request(self, request):
        try:
            if self.kind == "healthz":
                return json_response(200, {"status": "ok"})
            if self.kind == "readyz":
                return self._ready()
            if self.kind == "metrics":
                body, content_type = metrics.exposition()
                return Response(body, status=200, content_type=content_type)
            if self.kind == "openapi":
                from ipvkit.openapi import build_spec
                return json_response(200, build_spec(self.container))
        except Exception:
            log.exception("ops route %s failed", self.url)
            return json_response(500, {"error": "internal_error", "message": "internal error"})
        return json_response(404, {"error": "not_found", "message": "no such route"})

    def _ready(self):
        store = find_store(self.container)
        checks = {"database": store is not None and store.repo_class(store).ping(),
                  "broker": _broker_answers(self.container.config["AMQP_URI"])}
        for dep in self.container.dependencies:  # what else a service cannot work without (object storage)
            if hasattr(dep, "readiness"):
                checks[dep.readiness_name] = dep.readiness()
        # The web server answers while the event consumers still declare their queues (nameko starts every
        # extension at once): until then an event published to the service is not routed to it.
        consumers = [ep for ep in self.container.entrypoints if isinstance(ep, EventConsumer)]
        if consumers:
            checks["events"] = all(consumer.consuming for consumer in consumers)
        return json_response(200 if all(checks.values()) else 503,
                             {"status": "ready" if all(checks.values()) else "not ready", "checks": checks})


def _broker_answers(uri):
    try:
        with Connection(uri, connect_timeout=2) as conn:
            # Each node of a cluster's list once, without kombu's pause between tries: ready when one answers.
            conn.ensure_connection(max_retries=max(len(conn.alt), 2) - 1, interval_start=0, interval_step=0)
        return True
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


ops = OpsHandler.decorator


class ServiceBase:
    """Every service's class derives from this for its operational routes and log context."""

    log_context = logs.LogContext()

    def _event(self, call, type_, aggregate_id, sequence, data):
        """An event caused by an API call (`call`) or, with `call=None`, by the service itself
        (its `clock` dependency dates it)."""
        actor = call.principal.as_actor() if call else {"role": "system", "id": self.name}
        return new_event(type=type_, producer=self.name, aggregate_id=aggregate_id, sequence=sequence, data=data,
                         actor=actor, now=self.clock.now(), correlation_id=call.correlation_id if call else None)

    @ops("GET", "/healthz", kind="healthz")
    def healthz(self, request):
        pass

    @ops("GET", "/readyz", kind="readyz")
    def readyz(self, request):
        pass

    @ops("GET", "/metrics", kind="metrics")
    def metrics(self, request):
        pass

    @ops("GET", "/api/v1/openapi.json", kind="openapi")
    def openapi(self, request):
        pass
