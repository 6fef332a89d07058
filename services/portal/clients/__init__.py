"""One small client per backend service, each method one call of that service's public API (GOV.UK
Notify's `notify_client` in spirit). Pages never build API URLs or read API errors themselves: a refusal
(400/409/413/415/422) raises `ApiRefused`, which a form shows (forms.PortalForm.refused_by); 401, 403,
404 and failures become the portal's own pages (app.py).

The token sent is the one the request set in `flask.g.api_token`: the signed-in person's, or for
signed-out pages the read-only reader account's (signin.py)."""
import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from flask import copy_current_request_context, current_app, g

REFUSALS = (400, 409, 413, 415, 422)
_local = threading.local()
_readers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="api-read")


def concurrently(*calls):
    """The results of independent API reads made at once: a page that needs several waits for the
    slowest, not for their sum. Each runs in the request's context with the request's token (a copied
    request context gets an application context, and so a `g`, of its own)."""
    token = getattr(g, "api_token", None)

    def with_token(call):
        g.api_token = token
        return call()
    futures = [_readers.submit(copy_current_request_context(with_token), call) for call in calls]
    return [future.result() for future in futures]


class ApiError(Exception):
    def __init__(self, status, body):
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        super().__init__(f"{status} {self.body.get('error', '')}: {self.body.get('message', '')}")

    @property
    def message(self):
        return self.body.get("message", "")

    @property
    def rule(self):
        return self.body.get("rule")

    @property
    def fields(self):
        return self.body.get("fields") or {}


class ApiRefused(ApiError):
    """The API refused what the person asked (bad input, a rule, a state): shown on the form."""


class SignInNeeded(ApiError):
    """401: the token is gone or no longer accepted."""


class ApiUnavailable(ApiError):
    """5xx or no answer: the portal says so in its own error page."""


def _session():
    # requests.Session is not thread-safe to share; one per gunicorn thread keeps connections alive.
    if not hasattr(_local, "http"):
        _local.http = requests.Session()
    return _local.http


class ApiClient:
    def _request(self, method, path, *, params=None, json=None, files=None, data=None, idempotency_key=None,
                 raw=False, stream=False):
        headers = {"Accept": "application/json"}
        token = getattr(g, "api_token", None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        url = current_app.config["API_URL"].rstrip("/") + path
        try:
            response = _session().request(method, url, params=params, json=json, files=files, data=data,
                                          headers=headers, stream=stream,
                                          timeout=float(current_app.config["API_TIMEOUT_S"]))
        except requests.RequestException as exc:
            raise ApiUnavailable(503, {"error": "unavailable", "message": str(exc)})
        if response.status_code < 400:
            if raw or stream:
                return response
            return response.json() if response.content else {}
        try:
            body = response.json()
        except ValueError:
            body = {"error": "unexpected", "message": response.text[:200]}
        if response.status_code == 401:
            raise SignInNeeded(401, body)
        if response.status_code in REFUSALS:
            raise ApiRefused(response.status_code, body)
        if response.status_code >= 500:
            raise ApiUnavailable(response.status_code, body)
        raise ApiError(response.status_code, body)

    def get(self, path, **params):
        return self._request("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    def post(self, path, body=None, idempotency_key=None):
        return self._request("POST", path, json=body if body is not None else {}, idempotency_key=idempotency_key)

    def put(self, path, body):
        return self._request("PUT", path, json=body)

    def all_pages(self, path, limit=500, after=None, **params):
        """Every item of a keyset-paged list (`items`, `next_cursor`, asked for with `after`)."""
        items, cursor = [], after
        while True:
            page = self.get(path, limit=limit, after=cursor, **params)
            items.extend(page.get("items", []))
            cursor = page.get("next_cursor")
            if cursor is None:
                return items
