"""Query schemas of the audit service's API (its events' schemas are in ipvkit.contracts.audit)."""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.audit import RULES
from ipvkit.contracts.common import ID, REGION, TIERS
from ipvkit.contracts.provider import SERVICE_CODE
from ipvkit.text import Text
from services.audit.domain import REPORT_MEASURES
from services.audit.storage import DIMENSIONS

POSITION = validate.Range(min=0)
MONTH = validate.Regexp(r"^\d{4}-(0[1-9]|1[0-2])$", error="must be YYYY-MM")


class EntriesQuery(Schema):
    after = fields.Integer(load_default=-1, validate=validate.Range(min=-1),
                           metadata={"description": "the last position of the previous page"})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))
    type = Text(validate=validate.Regexp(r"^[a-z_]+\.[a-z_]+$"))
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
    programme = Text(validate=ID)
    region = Text(validate=REGION)
    tier = Text(validate=validate.OneOf(TIERS))
    service_code = Text(validate=SERVICE_CODE)
    agency = Text(validate=ID)
    month = Text(validate=MONTH)


class ReportQuery(FactFilters):
    by = Text(required=True, validate=validate.OneOf(DIMENSIONS))
    format = Text(load_default="json", validate=validate.OneOf(("json", "csv")))


class DrilldownQuery(FactFilters):
    measure = Text(required=True, validate=validate.OneOf(REPORT_MEASURES))
    after = Text(validate=validate.Length(1, 32), metadata={"description": "next_cursor of the previous page"})
    limit = fields.Integer(load_default=200, validate=validate.Range(1, 1000))
    format = Text(load_default="json", validate=validate.OneOf(("json", "csv")))


class AnomalyQuery(Schema):
    rule = Text(validate=validate.OneOf(RULES))
    after = Text(validate=validate.Length(1, 64))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))


class ReconcileQuery(Schema):
    programme = Text(validate=ID)
