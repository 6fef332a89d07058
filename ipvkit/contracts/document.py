"""Events of the documents service: a file uploaded for an order, stored in object storage.

`sha256` is what the documents service computed while the bytes streamed in; the vouchers service
keeps a read model of these events so a delivery can name its documents by id, and repeats each
document's id and SHA-256 in `order.delivered` for the audit ledger.
"""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.common import ID, SHA256
from ipvkit.events import register
from ipvkit.text import Text

KINDS = ("contract", "invoice", "payment_proof", "deliverable")
MEDIA_TYPES = ("application/pdf", "image/jpeg", "image/png", "application/ofd", "application/xml")
UPLOADER_ROLES = ("enterprise", "agency")


@register("document.uploaded", 1)
class DocumentUploaded(Schema):
    document_id = Text(required=True, validate=ID)
    order_id = Text(required=True, validate=ID)
    kind = Text(required=True, validate=validate.OneOf(KINDS))
    sha256 = Text(required=True, validate=SHA256)
    size_bytes = fields.Integer(required=True, strict=True, validate=validate.Range(1, 2**40))
    media_type = Text(required=True, validate=validate.OneOf(MEDIA_TYPES))
    uploader_role = Text(required=True, validate=validate.OneOf(UPLOADER_ROLES))
    uploader_id = Text(required=True, validate=ID)
