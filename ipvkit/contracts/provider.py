"""Events of the providers service that other services consume.

`affected_enterprises` lists the enterprises with an open order with the agency (the providers
service keeps that from order events), so the enterprises service can alert each one without
another call. `eligibility_line` is the lowest credit level that may take voucher orders.
"""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.common import ID, CreditCode
from ipvkit.events import register

CREDIT_LEVELS = ("A+", "A", "B", "C", "D")


class AffectedEnterprise(Schema):
    enterprise_id = CreditCode(required=True)
    order_ids = fields.List(fields.String(validate=ID), required=True, validate=validate.Length(max=1000))


class _Standing(Schema):
    agency_id = fields.String(required=True, validate=ID)
    agency_name = fields.String(required=True, validate=validate.Length(1, 200))
    eligibility_line = fields.String(required=True, validate=validate.OneOf(CREDIT_LEVELS))
    eligible = fields.Boolean(required=True)
    affected_enterprises = fields.List(fields.Nested(AffectedEnterprise), load_default=list,
                                       validate=validate.Length(max=5000))


@register("provider.rating_changed", 1)
class RatingChanged(_Standing):
    old_level = fields.String(required=True, allow_none=True, validate=validate.OneOf(CREDIT_LEVELS))
    new_level = fields.String(required=True, validate=validate.OneOf(CREDIT_LEVELS))
    score = fields.Integer(required=True, strict=True, validate=validate.Range(0, 200))
    was_eligible = fields.Boolean(required=True)


@register("provider.blacklisted", 1)
class Blacklisted(_Standing):
    reason = fields.String(required=True, validate=validate.Length(1, 500))
    source = fields.String(required=True, validate=validate.Length(1, 200))
    listed_from = fields.Date(required=True)
    listed_to = fields.Date(required=True, allow_none=True)
