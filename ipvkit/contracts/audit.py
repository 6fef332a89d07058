"""Events of the audit service."""
from marshmallow import Schema, fields, validate

from ipvkit.events import register
from ipvkit.text import Text

RULES = ("duplicate_evidence", "split_orders", "related_party", "order_after_downgrade",
         "agency_concentration", "claims_at_cap", "ledger_tampered")


@register("audit.anomaly_detected", 1)
class AnomalyDetected(Schema):
    anomaly_id = Text(required=True, validate=validate.Length(1, 64))
    rule = Text(required=True, validate=validate.OneOf(RULES))
    summary = Text(multiline=True, required=True, validate=validate.Length(1, 1000))
    subject = fields.Dict(required=True)  # the ids the flag is about: enterprise_id, agency_id, programme_id
    # Empty only for ledger_tampered when no entry is left to cite (its positions still say where).
    evidence_event_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(0, 1000))
    ledger_positions = fields.List(fields.Integer(strict=True, validate=validate.Range(min=0)), required=True,
                                   validate=validate.Length(1, 1000))


@register("audit.checkpoint_published", 1)
class CheckpointPublished(Schema):
    """A signed checkpoint of the audit ledger: the RFC 9162 Merkle root and the hash chain's head
    over the first `size` entries, signed with Ed25519 (see services/audit/ledger.py)."""
    size = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    root_hash = Text(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    chain_hash = Text(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    signed_at = Text(required=True, validate=validate.Length(1, 40))
    key_id = Text(required=True, validate=validate.Length(1, 64))
    signature = Text(required=True, validate=validate.Length(1, 200))
