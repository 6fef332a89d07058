"""Errors a caller can act on. The HTTP layer maps each to its status and a JSON body;
anything else escaping a handler is a bug and answers 500."""


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message, fields=None, **detail):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.detail = detail

    def body(self):
        body = {"error": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        body.update(self.detail)
        return body


class BadRequest(ApiError):
    status, code = 400, "invalid_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class RuleRefused(ApiError):
    """A business rule refused an otherwise well-formed request; `rule` names it."""
    status, code = 422, "rule_refused"

    def __init__(self, rule, message, **detail):
        super().__init__(message, rule=rule, **detail)


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Unavailable(ApiError):
    """Something the request needs (the database, the identity provider) cannot be reached; retry."""
    status, code = 503, "unavailable"


class IllegalTransition(Conflict):
    code = "illegal_transition"

    def __init__(self, kind, current, action):
        article = "an" if kind[:1] in "aeiou" else "a"
        super().__init__(f"cannot {action} {article} {kind} that is {current}", state=current, action=action)
