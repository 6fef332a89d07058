"""API bodies of the providers service (its events' schemas are in ipvkit.contracts.provider)."""
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ipvkit.contracts.common import REGION, CreditCode
from ipvkit.contracts.provider import AGENCY_KINDS, AGENCY_STATUSES, CREDIT_LEVELS, SERVICE_CODE
from ipvkit.text import Text
from services.providers import domain

REGION_PREFIX = validate.Regexp(r"^\d{2}(\d{2}(\d{2})?)?$",
                                error="must be a GB/T 2260 province (2 digits), city (4) or district (6) code")
LIST_TYPES = ("severe_dishonesty", "abnormal_operation", "other")  # 严重失信 / 经营异常 / 其他
PHONE = validate.Regexp(r"^\+?[0-9][0-9\- ]{4,19}$", error="must be a phone number")


def _unique(values):
    if len(set(values)) != len(values):
        raise ValidationError("must not repeat a value")


def _not_blank(value):
    if not value.strip():
        raise ValidationError("must not be blank")


class Contact(Schema):
    person = Text(required=True, validate=[validate.Length(1, 50), _not_blank])
    phone = Text(required=True, validate=PHONE)
    email = fields.Email(load_default=None, allow_none=True)


def _profile(required):
    """The agency's profile fields: all required at registration, any subset in a change."""
    return {
        "name": Text(required=required, validate=[validate.Length(1, 200), _not_blank]),
        "kind": Text(required=required, validate=validate.OneOf(AGENCY_KINDS),
                     metadata={"description": "patent, trademark or both"}),
        "licence_no": Text(required=required, validate=[validate.Length(1, 64), _not_blank],
                           metadata={"description": "专利代理机构执业许可证号 or 商标代理机构备案号"}),
        "region": Text(required=required, validate=REGION, metadata={"example": "350102"}),
        "service_codes": fields.List(Text(validate=SERVICE_CODE), required=required,
                                     validate=[validate.Length(1, 100), _unique],
                                     metadata={"description": "catalogue service codes it offers, e.g. PAT-01"}),
        "contact": fields.Nested(Contact, required=required),
        "related_credit_codes": fields.List(
            CreditCode(), validate=[validate.Length(max=100), _unique],
            metadata={"description": "declared affiliations (shareholders, group members); orders between "
                                     "related parties are refused by the vouchers service"}),
    }


AgencyIn = type("AgencyIn", (Schema,), {
    "credit_code": CreditCode(required=True, metadata={"description": "统一社会信用代码; it is also the agency_id",
                                                        "example": "91350100M000100Y43"}),
    **_profile(required=True)})


def _something(self, data, **_):
    if not data:
        raise ValidationError("give at least one field to change", "_schema")


AgencyPatch = type("AgencyPatch", (Schema,), {**_profile(required=False), "_something": validates_schema(_something)})


class ReasonIn(Schema):
    reason = Text(multiline=True, required=True, validate=[validate.Length(1, 500), _not_blank])


class BlacklistIn(Schema):
    list_type = Text(required=True, validate=validate.OneOf(LIST_TYPES),
                     metadata={"description": "severe_dishonesty 严重失信, abnormal_operation 经营异常, other"})
    reason = Text(multiline=True, required=True, validate=[validate.Length(1, 500), _not_blank])
    source = Text(required=True, validate=[validate.Length(1, 200), _not_blank],
                  metadata={"description": "who listed it, e.g. 国家企业信用信息公示系统"})
    listed_from = fields.Date(required=True)
    listed_to = fields.Date(load_default=None, allow_none=True, metadata={"description": "last day; none = open-ended"})

    @validates_schema
    def _order(self, data, **_):
        if data.get("listed_to") and data.get("listed_from") and data["listed_to"] < data["listed_from"]:
            raise ValidationError("must not be before listed_from", "listed_to")


class LiftIn(ReasonIn):
    lifted_on = fields.Date(metadata={"description": "defaults to today (UTC)"})


class _IndicatorIn(Schema):
    count = fields.Integer(strict=True, load_default=1, validate=validate.Range(1, 1000),
                           metadata={"description": "occurrences in the period"})
    points = fields.Integer(strict=True, load_default=None, allow_none=True, validate=validate.Range(0, 1000),
                            metadata={"description": "only for graded indicators (e.g. abnormal_filings, up to 40)"})
    note = Text(multiline=True, load_default=None, allow_none=True, validate=validate.Length(1, 500),
                metadata={"description": "the evidence: decision number, case, date"})


class DeductionIn(_IndicatorIn):
    indicator = Text(required=True, validate=validate.OneOf(domain.ALL_DEDUCTIONS))


class BonusIn(_IndicatorIn):
    indicator = Text(required=True, validate=validate.OneOf(domain.ALL_BONUSES))


def _once_each(items):
    _unique([i["indicator"] for i in items])


class EvaluationIn(Schema):
    period_from = fields.Date(required=True)
    period_to = fields.Date(required=True, metadata={"description": "its last day picks the rules in force"})
    deductions = fields.List(fields.Nested(DeductionIn), load_default=list, validate=[validate.Length(max=50), _once_each])
    bonuses = fields.List(fields.Nested(BonusIn), load_default=list, validate=[validate.Length(max=20), _once_each])
    note = Text(multiline=True, load_default=None, allow_none=True, validate=validate.Length(1, 1000))

    @validates_schema
    def _order(self, data, **_):
        if "period_from" in data and "period_to" in data and data["period_to"] < data["period_from"]:
            raise ValidationError("must not be before period_from", "period_to")


# -- answers ---------------------------------------------------------------------------------
class BlacklistOut(Schema):
    list_type = fields.String(required=True)
    reason = fields.String(required=True)
    source = fields.String(required=True)
    listed_from = fields.String(required=True)
    listed_to = fields.String(allow_none=True)
    lifted_on = fields.String(allow_none=True)
    lift_reason = fields.String(allow_none=True)


class AgencyOut(Schema):
    agency_id = fields.String(required=True)
    credit_code = fields.String(required=True)
    name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(AGENCY_KINDS))
    licence_no = fields.String(required=True)
    region = fields.String(required=True)
    service_codes = fields.List(fields.String(), required=True)
    contact = fields.Nested(Contact, required=True)
    related_credit_codes = fields.List(fields.String(), required=True)
    status = fields.String(required=True, validate=validate.OneOf(AGENCY_STATUSES))
    status_reason = fields.String(allow_none=True)
    level = fields.String(allow_none=True, validate=validate.OneOf(CREDIT_LEVELS))
    score = fields.Integer(allow_none=True)
    blacklist = fields.Nested(BlacklistOut, allow_none=True)
    eligible = fields.Boolean(required=True, metadata={"description": "may take new voucher orders now"})
    eligibility_line = fields.String(required=True)
    registered_at = fields.String(required=True)


class PageQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    after = Text(validate=validate.Length(1, 64), metadata={"description": "next_cursor of the previous page"})


class AgencyQuery(PageQuery):
    kind = Text(validate=validate.OneOf(AGENCY_KINDS))
    region = Text(validate=REGION_PREFIX)
    service_code = Text(validate=SERVICE_CODE)
    level = Text(validate=validate.OneOf(CREDIT_LEVELS + (domain.UNRATED,)))
    status = Text(validate=validate.OneOf(AGENCY_STATUSES))
    blacklisted = fields.Boolean()
    q = Text(validate=validate.Length(1, 100), metadata={"description": "part of the name"})


class AgencyPage(Schema):
    items = fields.List(fields.Nested(AgencyOut), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class ItemOut(Schema):
    indicator = fields.String(required=True)
    name = fields.String(required=True)
    count = fields.Integer(required=True)
    points = fields.Integer(required=True)
    capped = fields.Boolean(required=True)
    confirmed = fields.Boolean(required=True, metadata={"description": "false: an assumed indicator, not in the "
                                                                       "published text retrieved"})
    note = fields.String(allow_none=True)


class EvaluationOut(Schema):
    evaluation_id = fields.String(required=True)
    agency_id = fields.String(required=True)
    period_from = fields.String(required=True)
    period_to = fields.String(required=True)
    rules_version = fields.String(required=True)
    base = fields.Integer(required=True)
    deductions = fields.List(fields.Nested(ItemOut), required=True)
    bonuses = fields.List(fields.Nested(ItemOut), required=True)
    bonus_total = fields.Integer(required=True)
    bonus_capped = fields.Boolean(required=True)
    score = fields.Integer(required=True)
    level = fields.String(required=True, validate=validate.OneOf(CREDIT_LEVELS))
    bands = fields.List(fields.String(), required=True)
    note = fields.String(allow_none=True)
    recorded_at = fields.String(required=True)
    recorded_by = fields.String(required=True)
    current = fields.Boolean(required=True)


class EvaluationList(Schema):
    items = fields.List(fields.Nested(EvaluationOut), required=True)


class ServiceRecord(Schema):
    orders = fields.Integer(required=True)
    open_orders = fields.Integer(required=True)
    delivered = fields.Integer(required=True)
    on_time = fields.Integer(required=True)
    on_time_rate = fields.Float(allow_none=True)
    claims_rejected = fields.Integer(required=True)
    disputes = fields.Integer(required=True)
    disputes_upheld = fields.Integer(required=True)


class RatingOut(Schema):
    agency_id = fields.String(required=True)
    agency_name = fields.String(required=True)
    level = fields.String(allow_none=True)
    score = fields.Integer(allow_none=True)
    status = fields.String(required=True)
    blacklist = fields.Nested(BlacklistOut, allow_none=True)
    eligible = fields.Boolean(required=True)
    eligibility_line = fields.String(required=True)
    explanation = fields.List(fields.String(), required=True, metadata={"description": "base, each line, the band"})
    evaluation = fields.Nested(EvaluationOut, allow_none=True, required=True)
    service_record = fields.Nested(ServiceRecord, required=True,
                                   metadata={"description": "evidence for the next evaluation; it does not change "
                                                            "the rating by itself"})
    service_record_as_of = fields.String(required=True, metadata={"description": "recomputed every 10 s from "
                                                                                  "the order events received"})


class RecommendationQuery(Schema):
    service_code = Text(required=True, validate=SERVICE_CODE)
    region = Text(validate=REGION_PREFIX, metadata={"description": "agencies in this province/city/district"})
    limit = fields.Integer(load_default=10, validate=validate.Range(1, 50))


class Recommendation(Schema):
    rank = fields.Integer(required=True)
    agency_id = fields.String(required=True)
    name = fields.String(required=True)
    region = fields.String(required=True)
    level = fields.String(allow_none=True)
    score = fields.Integer(allow_none=True)
    service_record = fields.Nested(ServiceRecord, required=True)
    reason = fields.String(required=True)


class RecommendationList(Schema):
    service_code = fields.String(required=True)
    region = fields.String(allow_none=True)
    eligibility_line = fields.String(required=True)
    items = fields.List(fields.Nested(Recommendation), required=True)


class InvitationIn(Schema):
    email = fields.Email(required=True, validate=validate.Length(3, 254),
                         metadata={"description": "the agency person's e-mail: their username"})


class InvitationOut(Schema):
    agency_id = fields.String(required=True)
    username = fields.String(required=True)
    one_time_password = fields.String(required=True, metadata={
        "description": "hand it to the person out of band; Keycloak makes them replace it at the first sign-in"})
