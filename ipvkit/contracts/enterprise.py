"""Events of the enterprises service."""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.common import ID, LEVELS, REGION, TIERS, CreditCode
from ipvkit.events import register
from ipvkit.text import Text


@register("enterprise.registered", 1)
class EnterpriseRegistered(Schema):
    enterprise_id = CreditCode(required=True)
    name = Text(required=True, validate=validate.Length(1, 200))
    region = Text(required=True, validate=REGION)
    industry = Text(required=True, validate=validate.Length(1, 8))
    size = Text(required=True, validate=validate.OneOf(("micro", "small", "medium")))


@register("enterprise.verified", 1)
class EnterpriseVerified(Schema):
    """An officer checked that the enterprise is who its account says (实名认证); the account that
    registered it acts for it from then on."""
    enterprise_id = CreditCode(required=True)
    method = fields.String(required=True, validate=validate.OneOf(("business_licence", "legal_person_login",
                                                                   "documents")))
    reference = fields.String(required=True, validate=validate.Length(1, 128))


class _Qualification(Schema):
    qualification_id = Text(required=True, validate=ID)
    enterprise_id = CreditCode(required=True)
    tier = Text(required=True, validate=validate.OneOf(TIERS))


@register("enterprise.qualification_granted", 1)
class QualificationGranted(_Qualification):
    level = Text(required=True, validate=validate.OneOf(LEVELS))
    certificate_no = Text(required=True, validate=validate.Length(1, 64))
    issuing_authority = Text(required=True, validate=validate.Length(1, 128))
    valid_from = fields.Date(required=True)
    valid_to = fields.Date(required=True)


@register("enterprise.qualification_revoked", 1)
class QualificationRevoked(_Qualification):
    reason = Text(multiline=True, required=True, validate=validate.Length(1, 500))
    revoked_on = fields.Date(required=True)


@register("enterprise.qualification_expired", 1)
class QualificationExpired(_Qualification):
    valid_to = fields.Date(required=True)
