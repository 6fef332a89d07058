"""Events of the audit service."""
from marshmallow import Schema, fields, validate

from ipvkit.events import register

RULES = ("duplicate_evidence", "split_orders", "related_party", "order_after_downgrade",
         "agency_concentration", "claims_at_cap")


@register("audit.anomaly_detected", 1)
class AnomalyDetected(Schema):
    anomaly_id = fields.String(required=True, validate=validate.Length(1, 64))
    rule = fields.String(required=True, validate=validate.OneOf(RULES))
    summary = fields.String(required=True, validate=validate.Length(1, 1000))
    subject = fields.Dict(required=True)  # the ids the flag is about: enterprise_id, agency_id, programme_id
    evidence_event_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(1, 1000))
    ledger_positions = fields.List(fields.Integer(strict=True, validate=validate.Range(min=0)), required=True,
                                   validate=validate.Length(1, 1000))
