"""The OpenAPI 3.1 document of a service, built from its own route table and marshmallow
schemas, so it cannot drift from the code."""
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import INCLUDE, Schema, fields

from ipvkit.http import PUBLIC, WRITE_METHODS, ApiHandler

ERRORS = {400: "Invalid input; `fields` names each bad field", 401: "Missing or invalid bearer token",
          403: "Wrong role, or not your record", 404: "Not found", 409: "Conflict with the current state",
          413: "Body too large", 415: "The body is not sent as application/json (UTF-8)",
          422: "A rule refused the request; `rule` names it",
          503: "The database or the identity provider is unavailable; retry"}


class ErrorSchema(Schema):
    class Meta:
        # An error may carry more detail (ApiError(**detail)); the document must not forbid it.
        unknown = INCLUDE

    error = fields.String(required=True)
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields")
    rule = fields.String()
    state = fields.String()
    action = fields.String()


def openapi_path(url):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", url)


def api_routes(container):
    return [ep for ep in container.entrypoints if isinstance(ep, ApiHandler)]


def build_spec(container):
    spec = APISpec(title=f"{container.service_name} service", version="1.0.0", openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "IP-service vouchers: amounts are integer fen; times are UTC."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=ErrorSchema)
    paths = {}
    for ep in sorted(api_routes(container), key=lambda e: (e.url, e.method)):
        operation = {"operationId": ep.method_name, "summary": ep.summary or ep.method_name.replace("_", " "),
                     "tags": [container.service_name], "parameters": [], "responses": {}}
        codes = [400, 404, 503]
        for converter, name in re.findall(r"<(?:([^:<>]+):)?([^<>]+)>", ep.url):
            # werkzeug's int converter matches only digits: anything else never reaches the route.
            schema = {"type": "integer", "minimum": 0} if converter == "int" else {"type": "string"}
            operation["parameters"].append({"in": "path", "name": name, "required": True, "schema": schema})
        if ep.query_schema is not None:
            operation["parameters"].append({"in": "query", "schema": ep.query_schema})
        if ep.body_schema is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": ep.body_schema}}}
            codes.append(415)
        ok = {"description": "OK"}
        if ep.response_schema is not None:
            ok["content"] = {"application/json": {"schema": ep.response_schema}}
        for media_type in ep.other_types:
            ok.setdefault("content", {})[media_type] = {"schema": {"type": "string"}}
        operation["responses"][str(ep.status)] = ok
        if ep.roles != PUBLIC:
            operation["security"] = [{"bearer": []}]
            codes += [401, 403]
        if ep.method in WRITE_METHODS:
            codes += [409, 413, 422]
            operation["parameters"].append({
                "in": "header", "name": "Idempotency-Key", "required": False,
                "description": "Repeat a write safely: the same key returns the first result",
                "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:\-]{1,128}$"}})
        for code in sorted(set(codes)):
            operation["responses"][str(code)] = {
                "description": ERRORS[code], "content": {"application/json": {"schema": "Error"}}}
        if ep.roles != PUBLIC:
            operation["description"] = "Roles: " + ", ".join(ep.roles)
        paths.setdefault(openapi_path(ep.url), {})[ep.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
