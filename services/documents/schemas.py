"""API bodies of the documents service (its event's schema is in ipvkit.contracts.document)."""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.common import ID
from ipvkit.contracts.document import KINDS, MEDIA_TYPES
from ipvkit.text import Text

LEDGER_STATES = ("matches", "differs", "not_delivered", "not_in_ledger", "unavailable")


class UploadForm(Schema):
    """The multipart/form-data fields of an upload (the file itself is read as it streams)."""
    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary", "description":
                      "PDF, JPEG, PNG, OFD or 全电发票 XML, judged by content; at most DOCUMENT_MAX_BYTES (20 MB)"})
    kind = Text(required=True, validate=validate.OneOf(KINDS))
    order_id = Text(required=True, validate=ID, metadata={"description": "the order the file belongs to"})


class UploaderOut(Schema):
    role = fields.String(required=True)
    id = fields.String(required=True)


class DeliveryOut(Schema):
    """What `order.delivered` recorded about this document."""
    order_id = fields.String(required=True)
    event_id = fields.String(required=True)
    sha256 = fields.String(required=True)
    kind = fields.String(required=True)
    recorded_at = fields.String(required=True)


class DocumentOut(Schema):
    document_id = fields.String(required=True)
    order_id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    media_type = fields.String(required=True, validate=validate.OneOf(MEDIA_TYPES),
                               metadata={"description": "detected from the content"})
    size_bytes = fields.Integer(required=True)
    sha256 = fields.String(required=True, metadata={"description": "computed by the server as the bytes arrived"})
    filename = fields.String(allow_none=True, required=True, metadata={"description": "as the uploader named it"})
    uploader = fields.Nested(UploaderOut, required=True)
    created_at = fields.String(required=True)
    delivery = fields.Nested(DeliveryOut, allow_none=True, required=True,
                             metadata={"description": "set once a delivery names it: it can then never be deleted"})


class DocumentQuery(Schema):
    order_id = Text(required=True, validate=ID)


class DocumentList(Schema):
    items = fields.List(fields.Nested(DocumentOut), required=True)


class LedgerOut(Schema):
    state = fields.String(required=True, validate=validate.OneOf(LEDGER_STATES))
    position = fields.Integer(allow_none=True, required=True)
    event_id = fields.String(allow_none=True, required=True)
    sha256 = fields.String(allow_none=True, required=True, metadata={"description": "what the ledger recorded"})
    detail = fields.String(required=True)


class VerifyOut(Schema):
    document_id = fields.String(required=True)
    sha256 = fields.String(required=True, metadata={"description": "recorded at upload"})
    stored_sha256 = fields.String(allow_none=True, required=True,
                                  metadata={"description": "computed now from the stored object"})
    size_bytes = fields.Integer(required=True)
    stored_size_bytes = fields.Integer(allow_none=True, required=True)
    matches_upload = fields.Boolean(required=True)
    ledger = fields.Nested(LedgerOut, required=True)
    matches_ledger = fields.Boolean(allow_none=True, required=True,
                                    metadata={"description": "null while the document is not delivered or the ledger cannot be asked"})
    verified_at = fields.String(required=True)
