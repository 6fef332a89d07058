"""API bodies of the enterprises service (its events' schemas are in ipvkit.contracts.enterprise)."""
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from ipvkit.contracts.common import LEVELS, REGION, TIERS, CreditCode
from ipvkit.text import Text
from services.enterprises import domain

SIZES = ("micro", "small", "medium")
INDUSTRY = validate.Regexp(r"^[A-T](\d{2}(\d{1,2})?)?$",
                           error="must be a GB/T 4754-2017 code: a section letter A-T, optionally with 2-4 digits")


class EnterpriseIn(Schema):
    credit_code = CreditCode(required=True, metadata={"description": "统一社会信用代码 (GB 32100-2015)",
                                                       "example": "91350100M000100Y43"})
    name = Text(required=True, validate=validate.Length(1, 200))
    region = Text(required=True, validate=REGION, metadata={"example": "350102"})
    industry = Text(required=True, validate=INDUSTRY, metadata={"example": "C39"})
    size = Text(required=True, validate=validate.OneOf(SIZES),
                metadata={"description": "per 《中小企业划型标准规定》"})

    @validates("credit_code")
    def _enterprise(self, value, **_):
        problem = domain.enterprise_code_problem(value)
        if problem:
            raise ValidationError(problem)

    @validates("region")
    def _region(self, value, **_):
        problem = domain.region_problem(value)
        if problem:
            raise ValidationError(problem)

    @validates("name")
    def _name(self, value, **_):
        if not value.strip():
            raise ValidationError("must not be blank")


class EnterpriseOut(Schema):
    enterprise_id = fields.String(required=True)
    credit_code = fields.String(required=True)
    name = fields.String(required=True)
    region = fields.String(required=True)
    industry = fields.String(required=True)
    size = fields.String(required=True)
    registered_at = fields.String(required=True)
    verified = fields.Boolean(required=True, metadata={
        "description": "false while a self-registered enterprise waits for an officer's verification (实名认证)"})


class VerificationIn(Schema):
    method = fields.String(required=True, validate=validate.OneOf(("business_licence", "legal_person_login", "documents")),
                           metadata={"description": "how the officer checked: the 电子营业执照 (business_licence), the "
                                                    "government portal's legal-person sign-in (legal_person_login), "
                                                    "or the papers (documents)"})
    reference = fields.String(required=True, validate=validate.Length(1, 128),
                     metadata={"description": "the check's own reference (serial of the licence check, file number)"})


class PageQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    after = Text(validate=validate.Length(1, 64), metadata={"description": "next_cursor of the previous page"})


class EnterpriseQuery(PageQuery):
    region = Text(validate=REGION)
    industry = Text(validate=INDUSTRY)
    size = Text(validate=validate.OneOf(SIZES))
    q = Text(validate=validate.Length(1, 100), metadata={"description": "part of the name"})


class EnterprisePage(Schema):
    items = fields.List(fields.Nested(EnterpriseOut), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class QualificationIn(Schema):
    tier = Text(required=True, validate=validate.OneOf(TIERS))
    level = Text(required=True, validate=validate.OneOf(LEVELS))
    certificate_no = Text(required=True, validate=validate.Length(1, 64))
    issuing_authority = Text(required=True, validate=validate.Length(1, 128))
    valid_from = fields.Date(required=True)
    valid_to = fields.Date(required=True)

    @validates_schema
    def _order(self, data, **_):
        if "valid_from" in data and "valid_to" in data and data["valid_to"] < data["valid_from"]:
            raise ValidationError("must not be before valid_from", "valid_to")


class QualificationOut(Schema):
    qualification_id = fields.String(required=True)
    enterprise_id = fields.String(required=True)
    tier = fields.String(required=True)
    level = fields.String(required=True)
    certificate_no = fields.String(required=True)
    issuing_authority = fields.String(required=True)
    valid_from = fields.String(required=True)
    valid_to = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("active", "revoked", "expired")))
    revoked_on = fields.String(allow_none=True)
    revoke_reason = fields.String(allow_none=True)


class QualificationList(Schema):
    items = fields.List(fields.Nested(QualificationOut), required=True)


class RevokeIn(Schema):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))
    revoked_on = fields.Date(metadata={"description": "defaults to today (UTC)"})


class TiersQuery(Schema):
    on = fields.Date(metadata={"description": "the date to ask about; defaults to today (UTC)"})


class TiersOut(Schema):
    enterprise_id = fields.String(required=True)
    on = fields.String(required=True)
    tiers = fields.List(fields.String(), required=True)
    qualifications = fields.List(fields.Nested(QualificationOut), required=True)


class NotificationOut(Schema):
    notification_id = fields.String(required=True)
    kind = fields.String(required=True)
    title = fields.String(required=True)
    body = fields.String(required=True)
    agency_id = fields.String(required=True)
    old_standing = fields.String(required=True)
    new_standing = fields.String(required=True)
    order_ids = fields.List(fields.String(), required=True)
    event_id = fields.String(required=True)
    created_at = fields.String(required=True)
    read = fields.Boolean(required=True)


class NotificationQuery(PageQuery):
    unread = fields.Boolean(metadata={"description": "only unread ones"})


class NotificationPage(Schema):
    items = fields.List(fields.Nested(NotificationOut), required=True)
    next_cursor = fields.String(allow_none=True, required=True)
