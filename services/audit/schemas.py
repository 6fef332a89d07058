"""Query schemas of the audit service's API (its events' schemas are in ipvkit.contracts.audit)."""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.audit import RULES
from ipvkit.contracts.common import ID, REGION, TIERS
from ipvkit.contracts.provider import SERVICE_CODE
from services.audit.domain import REPORT_MEASURES
from services.audit.storage import DIMENSIONS

POSITION = validate.Range(min=0)
MONTH = validate.Regexp(r"^\d{4}-(0[1-9]|1[0-2])$", error="must be YYYY-MM")


class EntriesQuery(Schema):
    after = fields.Integer(load_default=-1, validate=validate.Range(min=-1),
                           metadata={"description": "the last position of the previous page"})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))
    type = fields.String(validate=validate.Regexp(r"^[a-z_]+\.[a-z_]+$"))
    event_id = fields.UUID()


class ProofQuery(Schema):
    checkpoint = fields.Integer(validate=validate.Range(min=1),
                                metadata={"description": "the checkpoint's size; the latest by default"})


class ConsistencyQuery(Schema):
    to = fields.Integer(validate=validate.Range(min=1),
                        metadata={"description": "the later checkpoint's size; the latest by default"})


class PageQuery(Schema):
    after = fields.Integer(load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class FactFilters(Schema):
    programme = fields.String(validate=ID)
    region = fields.String(validate=REGION)
    tier = fields.String(validate=validate.OneOf(TIERS))
    service_code = fields.String(validate=SERVICE_CODE)
    agency = fields.String(validate=ID)
    month = fields.String(validate=MONTH)


class ReportQuery(FactFilters):
    by = fields.String(required=True, validate=validate.OneOf(DIMENSIONS))
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv")))


class DrilldownQuery(FactFilters):
    measure = fields.String(required=True, validate=validate.OneOf(REPORT_MEASURES))
    after = fields.String(validate=validate.Length(1, 32), metadata={"description": "next_cursor of the previous page"})
    limit = fields.Integer(load_default=200, validate=validate.Range(1, 1000))
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv")))


class AnomalyQuery(Schema):
    rule = fields.String(validate=validate.OneOf(RULES))
    after = fields.String(validate=validate.Length(1, 64))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))


class ReconcileQuery(Schema):
    programme = fields.String(validate=ID)
    # A page of programmes in id order (each costs the vouchers service's figures per voucher).
    after = fields.String(validate=ID)
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
