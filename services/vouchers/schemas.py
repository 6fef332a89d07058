"""API bodies of the vouchers service (its events' schemas are in ipvkit.contracts.voucher)."""
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ipvkit.contracts.common import ID, REGION, SHA256, TIERS
from ipvkit.contracts.voucher import (POSITIVE_FEN, REDEMPTION_MODELS, CatalogueItem, DeliveredDocument, Evidence,
                                      TierTerms)
from ipvkit.text import Text
from services.vouchers.domain import CLAIM_STATES, ORDER_STATES, PROGRAMME_STATES, VOUCHER_STATES


def fen_out(**kw):
    return fields.Integer(required=True, **kw)


class ProgrammeIn(Schema):
    name = Text(required=True, validate=validate.Length(1, 200))
    region = Text(required=True, validate=REGION, metadata={"example": "331021"})
    fund_source = Text(required=True, validate=validate.Length(1, 64),
                       metadata={"example": "中小企业发展专项资金"})
    budget_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN)
    opens_on = fields.Date(required=True)
    closes_on = fields.Date(required=True)
    validity_days = fields.Integer(required=True, strict=True, validate=validate.Range(1, 3660))
    redemption_model = Text(required=True, validate=validate.OneOf(REDEMPTION_MODELS),
                            metadata={"description": "enterprise_pays 企业兑付 / agency_redeems 机构兑付"})
    tiers = fields.List(fields.Nested(TierTerms), required=True, validate=validate.Length(1, 10))
    catalogue = fields.List(fields.Nested(CatalogueItem), required=True, validate=validate.Length(1, 500))

    @validates_schema
    def _window(self, data, **_):
        if "opens_on" in data and "closes_on" in data and data["closes_on"] < data["opens_on"]:
            raise ValidationError("must not be before opens_on", "closes_on")


class ProgrammeOut(Schema):
    programme_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(PROGRAMME_STATES))
    revision = fields.Integer(required=True)
    name = fields.String(required=True)
    region = fields.String(required=True)
    fund_source = fields.String(required=True)
    budget_fen = fen_out()
    remaining_fen = fen_out()
    opens_on = fields.String(required=True)
    closes_on = fields.String(required=True)
    validity_days = fields.Integer(required=True)
    redemption_model = fields.String(required=True)
    tiers = fields.List(fields.Nested(TierTerms), required=True)
    catalogue = fields.List(fields.Nested(CatalogueItem), required=True)


class PageQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    after = Text(validate=ID, metadata={"description": "next_cursor of the previous page"})


class ProgrammeQuery(PageQuery):
    status = Text(validate=validate.OneOf(PROGRAMME_STATES))


class ProgrammePage(Schema):
    items = fields.List(fields.Nested(ProgrammeOut), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class BalancesOut(Schema):
    programme_id = fields.String(required=True)
    budget_fen = fen_out()
    remaining_fen = fen_out()
    free_fen = fen_out()
    held_fen = fen_out()
    paid_fen = fen_out()
    returned_fen = fen_out()


class RecountedBalancesOut(BalancesOut):
    as_of = fields.AwareDateTime(required=True, metadata={"description": "when the recount read the vouchers (UTC)"})


class ApplyIn(Schema):
    programme_id = Text(required=True, validate=ID)
    tier = Text(validate=validate.OneOf(TIERS),
                metadata={"description": "defaults to the held tier with the largest face value"})


class VoucherOut(Schema):
    voucher_id = fields.String(required=True)
    programme_id = fields.String(required=True)
    enterprise_id = fields.String(required=True)
    tier = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(VOUCHER_STATES))
    face_value_fen = fen_out()
    free_fen = fen_out()
    held_fen = fen_out()
    paid_fen = fen_out()
    returned_fen = fen_out()
    valid_from = fields.String(required=True)
    valid_to = fields.String(required=True)
    redemption_model = fields.String(required=True)
    issued_at = fields.String(required=True)


class VoucherQuery(PageQuery):
    programme_id = Text(validate=ID)
    enterprise_id = Text(validate=ID)
    status = Text(validate=validate.OneOf(VOUCHER_STATES))


class VoucherPage(Schema):
    items = fields.List(fields.Nested(VoucherOut), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class ReasonIn(Schema):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))


class OrderIn(Schema):
    voucher_id = Text(required=True, validate=ID)
    agency_id = Text(required=True, validate=ID)
    service_code = Text(required=True, validate=validate.Length(1, 16))
    price_fen = fields.Integer(required=True, strict=True, validate=POSITIVE_FEN,
                               metadata={"description": "the price agreed with the agency, before subsidy"})
    deliver_by = fields.Date(required=True)


class ClaimOut(Schema):
    claim_id = fields.String(required=True)
    order_id = fields.String(required=True)
    voucher_id = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(CLAIM_STATES))
    amount_fen = fen_out()
    payee_role = fields.String(required=True)
    payee_id = fields.String(required=True)
    reason = fields.String(allow_none=True)
    payment_ref = fields.String(allow_none=True)
    paid_on = fields.String(allow_none=True)


class OrderOut(Schema):
    order_id = fields.String(required=True)
    voucher_id = fields.String(required=True)
    programme_id = fields.String(required=True)
    enterprise_id = fields.String(required=True)
    agency_id = fields.String(required=True)
    service_code = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(ORDER_STATES))
    price_fen = fen_out()
    subsidy_fen = fen_out()
    copay_fen = fen_out()
    held_fen = fen_out(metadata={"description": "subsidy still held for this order"})
    deliver_by = fields.String(required=True)
    placed_on = fields.String(required=True)
    delivered_on = fields.String(allow_none=True)
    evidence = fields.Nested(Evidence, allow_none=True)
    documents = fields.List(fields.Nested(DeliveredDocument), allow_none=True,
                            metadata={"description": "the uploaded documents the delivery named, with their SHA-256"})
    reason = fields.String(allow_none=True)
    claim = fields.Nested(ClaimOut, allow_none=True)


class OrderQuery(PageQuery):
    voucher_id = Text(validate=ID)
    state = Text(validate=validate.OneOf(ORDER_STATES))


class OrderPage(Schema):
    items = fields.List(fields.Nested(OrderOut), required=True)
    next_cursor = fields.String(allow_none=True, required=True,
                                metadata={"description": "pages run over vouchers: a page may hold more or fewer"})


class DeliveryDocumentsIn(Schema):
    """Ids of documents uploaded to the documents service for this order (each optional)."""
    contract = Text(validate=ID)
    invoice = Text(validate=ID)
    payment_proof = Text(validate=ID)
    deliverable = Text(validate=ID)


class DeliverIn(Evidence):
    deliverable_sha256 = Text(validate=SHA256, metadata={
        "description": "required unless documents.deliverable names an upload (its SHA-256 is then used)"})
    documents = fields.Nested(DeliveryDocumentsIn, metadata={
        "description": "uploaded documents by kind; each must be this order's, uploaded by its enterprise or agency"})


class ResolveIn(Schema):
    upheld = fields.Boolean(required=True, metadata={"description": "true: the enterprise was right; the hold is released"})
    resolution = Text(multiline=True, required=True, validate=validate.Length(1, 500))


class ClaimIn(Schema):
    order_id = Text(required=True, validate=ID)


class ClaimQuery(PageQuery):
    state = Text(validate=validate.OneOf(CLAIM_STATES))


class ClaimPage(Schema):
    items = fields.List(fields.Nested(ClaimOut), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class PayIn(Schema):
    payment_ref = Text(required=True, validate=validate.Length(1, 128))
    paid_on = fields.Date(metadata={"description": "defaults to today (UTC)"})

