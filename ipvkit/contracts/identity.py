"""Sign-in and account events of the Keycloak realm, as the audit service writes them into the ledger
(producer `identity`): taken from Keycloak's own event store, one ledger entry per Keycloak event."""
from marshmallow import Schema, fields, validate

from ipvkit.events import register

TYPES = ("identity.signed_in", "identity.sign_in_failed", "identity.locked_out", "identity.signed_out",
         "identity.registered", "identity.credential_changed", "identity.role_changed", "identity.account_changed")
_TEXT = validate.Length(max=256)


class IdentityEvent(Schema):
    keycloak_event_id = fields.String(required=True, validate=validate.Length(1, 64))
    keycloak_type = fields.String(required=True, validate=validate.Length(1, 64))
    user_id = fields.String(allow_none=True, validate=_TEXT)
    username = fields.String(allow_none=True, validate=_TEXT)
    client_id = fields.String(allow_none=True, validate=_TEXT)
    ip_address = fields.String(allow_none=True, validate=_TEXT)
    error = fields.String(allow_none=True, validate=_TEXT)
    roles = fields.List(fields.String(validate=_TEXT), allow_none=True, validate=validate.Length(max=50))
    by = fields.String(allow_none=True, validate=_TEXT, metadata={"description": "the administrator's account"})


for _type in TYPES:
    register(_type, 1)(IdentityEvent)
