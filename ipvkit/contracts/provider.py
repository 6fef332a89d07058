"""Events of the providers service that other services consume.

`affected_enterprises` lists the enterprises with an open order with the agency (the providers
service keeps that from order events), so the enterprises service can alert each one without
another call. `eligibility_line` is the lowest credit level that may take voucher orders.
"""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.common import ID, REGION, CreditCode
from ipvkit.events import register
from ipvkit.text import Text

CREDIT_LEVELS = ("A+", "A", "B", "C", "D")


class AffectedEnterprise(Schema):
    enterprise_id = CreditCode(required=True)
    order_ids = fields.List(Text(validate=ID), required=True, validate=validate.Length(max=1000))


class _Standing(Schema):
    agency_id = Text(required=True, validate=ID)
    agency_name = Text(required=True, validate=validate.Length(1, 200))
    eligibility_line = Text(required=True, validate=validate.OneOf(CREDIT_LEVELS))
    eligible = fields.Boolean(required=True)
    affected_enterprises = fields.List(fields.Nested(AffectedEnterprise), load_default=list,
                                       validate=validate.Length(max=5000))


@register("provider.rating_changed", 1)
class RatingChanged(_Standing):
    old_level = Text(required=True, allow_none=True, validate=validate.OneOf(CREDIT_LEVELS))
    new_level = Text(required=True, validate=validate.OneOf(CREDIT_LEVELS))
    score = fields.Integer(required=True, strict=True, validate=validate.Range(0, 200))
    was_eligible = fields.Boolean(required=True)


@register("provider.blacklisted", 1)
class Blacklisted(_Standing):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))
    source = Text(required=True, validate=validate.Length(1, 200))
    listed_from = fields.Date(required=True)
    listed_to = fields.Date(required=True, allow_none=True)


AGENCY_KINDS = ("patent", "trademark", "both")
AGENCY_STATUSES = ("active", "suspended", "cancelled")
SERVICE_CODE = validate.Regexp(r"^[A-Z]{2,4}-\d{2,4}$", error="must look like PAT-01 (catalogue service code)")


@register("provider.registered", 1)
class ProviderRegistered(Schema):
    """Everything the vouchers service needs to decide whether an agency may take an order."""
    agency_id = Text(required=True, validate=ID)
    name = Text(required=True, validate=validate.Length(1, 200))
    credit_code = CreditCode(required=True)
    kind = Text(required=True, validate=validate.OneOf(AGENCY_KINDS))
    region = Text(required=True, validate=REGION)
    service_codes = fields.List(Text(validate=SERVICE_CODE), required=True,
                                validate=validate.Length(1, 100))
    # Declared affiliations (shareholders, group members): orders between related parties are refused.
    related_credit_codes = fields.List(CreditCode(), load_default=list, validate=validate.Length(max=100))
    eligibility_line = Text(required=True, validate=validate.OneOf(CREDIT_LEVELS))
    level = Text(required=True, allow_none=True, validate=validate.OneOf(CREDIT_LEVELS))
    eligible = fields.Boolean(required=True)


@register("provider.profile_changed", 1)
class ProfileChanged(Schema):
    """Service scope or affiliations changed; carries the full new values, not a diff."""
    agency_id = Text(required=True, validate=ID)
    name = Text(required=True, validate=validate.Length(1, 200))
    kind = Text(required=True, validate=validate.OneOf(AGENCY_KINDS))
    region = Text(required=True, validate=REGION)
    service_codes = fields.List(Text(validate=SERVICE_CODE), required=True,
                                validate=validate.Length(1, 100))
    related_credit_codes = fields.List(CreditCode(), load_default=list, validate=validate.Length(max=100))


@register("provider.status_changed", 1)
class StatusChanged(_Standing):
    """Suspended, reinstated or cancelled; a suspended or cancelled agency takes no new order."""
    old_status = Text(required=True, validate=validate.OneOf(AGENCY_STATUSES))
    new_status = Text(required=True, validate=validate.OneOf(AGENCY_STATUSES))
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))


@register("provider.blacklist_lifted", 1)
class BlacklistLifted(_Standing):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))
    lifted_on = fields.Date(required=True)
