"""Events of the vouchers service: programmes, vouchers, orders (redemptions) and claims.

Money is integer fen. Every order and claim event repeats the ids a consumer groups by
(programme, voucher, enterprise, agency), so the providers and audit services can build their
views from one event without another call. Where a hold is released, `released_to` says whether
the fen went back to the voucher's free balance or, the voucher having expired or been revoked,
to the programme's budget.
"""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.common import ID, REGION, TIERS, CreditCode
from ipvkit.contracts.provider import AGENCY_KINDS, SERVICE_CODE
from ipvkit.events import register
from ipvkit.text import Text

FEN = validate.Range(0, 10**13)  # 100 billion RMB: far above any programme, far below float trouble
POSITIVE_FEN = validate.Range(1, 10**13)
REDEMPTION_MODELS = ("enterprise_pays", "agency_redeems")  # 企业兑付 / 机构兑付
PAYEE_ROLES = ("enterprise", "agency")
RELEASED_TO = ("voucher", "programme")
SHA256 = validate.Regexp(r"^[0-9a-f]{64}$", error="must be a lower-case hex SHA-256")


def fen(**kw):
    return fields.Integer(strict=True, validate=FEN, **kw)


class TierTerms(Schema):
    tier = Text(required=True, validate=validate.OneOf(TIERS))
    face_value_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)
    annual_cap_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)


class CatalogueItem(Schema):
    service_code = Text(required=True, validate=SERVICE_CODE)
    name = Text(required=True, validate=validate.Length(1, 200))
    subsidy_ratio_bp = fields.Integer(required=True, strict=True, validate=validate.Range(1, 10000))  # basis points
    item_cap_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)
    agency_kinds = fields.List(Text(validate=validate.OneOf(AGENCY_KINDS)), required=True,
                               validate=validate.Length(1, 3))
    barred_reason = Text(multiline=True, load_default=None, allow_none=True, validate=validate.Length(1, 500))


class _Programme(Schema):
    programme_id = Text(required=True, validate=ID)


@register("programme.created", 1)
class ProgrammeCreated(_Programme):
    name = Text(required=True, validate=validate.Length(1, 200))
    region = Text(required=True, validate=REGION)
    fund_source = Text(required=True, validate=validate.Length(1, 64))
    budget_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)
    opens_on = fields.Date(required=True)
    closes_on = fields.Date(required=True)
    validity_days = fields.Integer(required=True, strict=True, validate=validate.Range(1, 3660))
    redemption_model = Text(required=True, validate=validate.OneOf(REDEMPTION_MODELS))
    tiers = fields.List(fields.Nested(TierTerms), required=True, validate=validate.Length(1, 10))
    catalogue = fields.List(fields.Nested(CatalogueItem), required=True, validate=validate.Length(1, 500))


@register("programme.changed", 1)
class ProgrammeChanged(ProgrammeCreated):
    """The full new terms; vouchers already issued keep the terms they were issued under."""
    revision = fields.Integer(required=True, strict=True, validate=validate.Range(min=2))


@register("programme.opened", 1)
class ProgrammeOpened(_Programme):
    budget_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)


@register("programme.closed", 1)
class ProgrammeClosed(_Programme):
    remaining_fen = fen(required=True)


class _Voucher(_Programme):
    voucher_id = Text(required=True, validate=ID)
    enterprise_id = CreditCode(required=True)


@register("voucher.issued", 1)
class VoucherIssued(_Voucher):
    tier = Text(required=True, validate=validate.OneOf(TIERS))
    face_value_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)
    valid_from = fields.Date(required=True)
    valid_to = fields.Date(required=True)
    budget_remaining_fen = fen(required=True)


@register("voucher.expired", 1)
class VoucherExpired(_Voucher):
    returned_fen = fen(required=True)  # free balance back to the programme budget
    held_fen = fen(required=True)  # still on orders in progress; returns as each settles


@register("voucher.revoked", 1)
class VoucherRevoked(_Voucher):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))
    returned_fen = fen(required=True)
    held_fen = fen(required=True)


class _Order(_Voucher):
    order_id = Text(required=True, validate=ID)
    agency_id = Text(required=True, validate=ID)


@register("order.placed", 1)
class OrderPlaced(_Order):
    service_code = Text(required=True, validate=SERVICE_CODE)
    price_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)
    subsidy_fen = fen(required=True)
    copay_fen = fen(required=True)
    redemption_model = Text(required=True, validate=validate.OneOf(REDEMPTION_MODELS))
    deliver_by = fields.Date(required=True)


@register("order.cancelled", 1)
class OrderCancelled(_Order):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))
    released_fen = fen(required=True)
    released_to = Text(required=True, validate=validate.OneOf(RELEASED_TO))


class Evidence(Schema):
    contract_ref = Text(required=True, validate=validate.Length(1, 128))
    invoice_no = Text(required=True, validate=validate.Length(1, 64))
    payment_proof_ref = Text(required=True, validate=validate.Length(1, 128))
    official_no = Text(load_default=None, allow_none=True, validate=validate.Length(1, 64))
    deliverable_sha256 = Text(required=True, validate=SHA256)


@register("order.delivered", 1)
class OrderDelivered(_Order):
    deliver_by = fields.Date(required=True)
    delivered_on = fields.Date(required=True)
    on_time = fields.Boolean(required=True)
    evidence = fields.Nested(Evidence, required=True)


@register("order.confirmed", 1)
class OrderConfirmed(_Order):
    pass


@register("order.disputed", 1)
class OrderDisputed(_Order):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))


@register("order.dispute_resolved", 1)
class DisputeResolved(_Order):
    upheld = fields.Boolean(required=True)  # upheld = the enterprise was right: the hold is released
    resolution = Text(multiline=True, required=True, validate=validate.Length(1, 500))
    released_fen = fen(required=True)
    released_to = Text(required=True, allow_none=True, validate=validate.OneOf(RELEASED_TO))


class _Claim(_Order):
    claim_id = Text(required=True, validate=ID)
    amount_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)


@register("claim.submitted", 1)
class ClaimSubmitted(_Claim):
    payee_role = Text(required=True, validate=validate.OneOf(PAYEE_ROLES))
    payee_id = Text(required=True, validate=ID)
    invoice_no = Text(required=True, validate=validate.Length(1, 64))
    deliverable_sha256 = Text(required=True, validate=SHA256)


@register("claim.approved", 1)
class ClaimApproved(_Claim):
    pass


@register("claim.rejected", 1)
class ClaimRejected(_Claim):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))
    released_fen = fen(required=True)
    released_to = Text(required=True, validate=validate.OneOf(RELEASED_TO))


@register("claim.paid", 1)
class ClaimPaid(_Claim):
    payee_role = Text(required=True, validate=validate.OneOf(PAYEE_ROLES))
    payee_id = Text(required=True, validate=ID)
    payment_ref = Text(required=True, validate=validate.Length(1, 128))
    paid_on = fields.Date(required=True)
