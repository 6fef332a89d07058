"""Field types shared by several contracts."""
from marshmallow import ValidationError, fields, validate
from stdnum.cn import uscc

TIERS = ("innovative_sme", "tech_innovative_sme", "srdi_sme", "little_giant")
LEVELS = ("national", "provincial", "municipal")
REGION = validate.Regexp(r"^\d{6}$", error="must be a six-digit GB/T 2260 code")
ID = validate.Length(1, 64)
SHA256 = validate.Regexp(r"^[0-9a-f]{64}$", error="must be a lower-case hex SHA-256")


class CreditCode(fields.String):
    """统一社会信用代码, normalised to upper case and checked with the GB 32100-2015 check character."""

    def _deserialize(self, value, attr, data, **kwargs):
        code = super()._deserialize(value, attr, data, **kwargs).strip().upper()
        if len(code) != 18:
            raise ValidationError("must be 18 characters")
        try:
            return uscc.validate(code)
        except uscc.InvalidChecksum:
            raise ValidationError("check character does not match (GB 32100-2015)")
        except Exception:
            raise ValidationError("only digits and the letters 0-9A-HJ-NPQRTUWXY may appear")
