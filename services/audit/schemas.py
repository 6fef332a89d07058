"""Query and answer schemas of the audit service's API (its events' schemas are in ipvkit.contracts.audit)."""
from marshmallow import Schema, fields, validate

from ipvkit.contracts.audit import RULES
from ipvkit.contracts.common import ID, REGION, TIERS
from ipvkit.contracts.provider import SERVICE_CODE
from ipvkit.text import Text
from services.audit.domain import BUCKETS, REPORT_MEASURES
from services.audit.storage import DIMENSIONS

POSITION = validate.Range(min=0)
MONTH = validate.Regexp(r"^\d{4}-(0[1-9]|1[0-2])$", error="must be YYYY-MM")


class EntriesQuery(Schema):
    after = fields.Integer(load_default=-1, validate=validate.Range(min=-1),
                           metadata={"description": "the last position of the previous page"})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))
    type = Text(validate=validate.Regexp(r"^[a-z_]+\.[a-z_]+$"))
    event_id = fields.UUID()


class ProofQuery(Schema):
    checkpoint = fields.Integer(validate=validate.Range(min=1),
                                metadata={"description": "the checkpoint's size; the latest by default"})


class ConsistencyQuery(Schema):
    to = fields.Integer(validate=validate.Range(min=1),
                        metadata={"description": "the later checkpoint's size; the latest by default"})


class PageQuery(Schema):
    after = fields.Integer(load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class FactFilters(Schema):
    programme = Text(validate=ID)
    region = Text(validate=REGION)
    tier = Text(validate=validate.OneOf(TIERS))
    service_code = Text(validate=SERVICE_CODE)
    agency = Text(validate=ID)
    month = Text(validate=MONTH)


class ReportQuery(FactFilters):
    by = Text(required=True, validate=validate.OneOf(DIMENSIONS))
    format = Text(load_default="json", validate=validate.OneOf(("json", "csv")))


class DrilldownQuery(FactFilters):
    measure = Text(required=True, validate=validate.OneOf(REPORT_MEASURES))
    after = Text(validate=validate.Length(1, 32), metadata={"description": "next_cursor of the previous page"})
    limit = fields.Integer(load_default=200, validate=validate.Range(1, 1000))
    format = Text(load_default="json", validate=validate.OneOf(("json", "csv")))


class AnomalyQuery(Schema):
    rule = Text(validate=validate.OneOf(RULES))
    after = Text(validate=validate.Length(1, 64))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))


class ReconcileQuery(Schema):
    programme = Text(validate=ID)
    # A page of programmes in id order (each costs the vouchers service's figures per voucher).
    after = Text(validate=ID)
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))


# -- answers ---------------------------------------------------------------------------------------
HEX64 = validate.Regexp(r"^[0-9a-f]{64}$")
PROBLEM_KINDS = ("modified", "deleted", "inserted", "reordered", "broken_link", "checkpoint")


class HeadOut(Schema):
    size = fields.Integer(required=True, metadata={"description": "entries in the ledger"})
    hash = fields.String(required=True, validate=HEX64, metadata={"description": "the last entry's chain hash"})
    projected = fields.Integer(required=True, metadata={"description": "entries the read models include"})


class EntryOut(Schema):
    position = fields.Integer(required=True)
    event_id = fields.String(required=True)
    type = fields.String(required=True)
    event = fields.Dict(required=True, metadata={"description": "the event as recorded (its canonical JSON)"})
    prev_hash = fields.String(required=True, validate=HEX64)
    hash = fields.String(required=True, validate=HEX64)
    appended_at = fields.String(required=True)


class EntryPage(Schema):
    items = fields.List(fields.Nested(EntryOut), required=True)
    next_cursor = fields.Integer(required=True, allow_none=True, metadata={"description": "pass as `after`"})


class Problem(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(PROBLEM_KINDS))
    position = fields.Integer(required=True, metadata={"description": "the entry's position (a checkpoint's size "
                                                                      "for kind checkpoint)"})
    detail = fields.String(required=True)


class VerifyOut(Schema):
    ok = fields.Boolean(required=True)
    entries = fields.Integer(required=True)
    head_size = fields.Integer(required=True)
    checkpoints = fields.Integer(required=True)
    problems = fields.List(fields.Nested(Problem), required=True)


class PublicKeyOut(Schema):
    key_id = fields.String(required=True)
    algorithm = fields.String(required=True, validate=validate.OneOf(("Ed25519",)))
    public_key = fields.String(required=True, metadata={"description": "PEM"})


class CheckpointOut(Schema):
    size = fields.Integer(required=True)
    root_hash = fields.String(required=True, validate=HEX64)
    chain_hash = fields.String(required=True, validate=HEX64)
    signed_at = fields.String(required=True)
    key_id = fields.String(required=True)
    signature = fields.String(required=True, metadata={"description": "Ed25519, base64"})


class CheckpointPage(Schema):
    items = fields.List(fields.Nested(CheckpointOut), required=True)
    next_cursor = fields.Integer(required=True, allow_none=True, metadata={"description": "pass as `after`"})


PROOF = {"description": "an RFC 9162 proof as pymerkle 7 serialises it (MerkleProof.deserialize reads it)"}


class InclusionOut(Schema):
    entry = fields.Nested(EntryOut, required=True)
    checkpoint = fields.Nested(CheckpointOut, required=True)
    proof = fields.Dict(required=True, metadata=PROOF)


class ConsistencyOut(Schema):
    older = fields.Nested(CheckpointOut, required=True)
    newer = fields.Nested(CheckpointOut, required=True)
    proof = fields.Dict(required=True, metadata=PROOF)


class Drilldown(Schema):
    by = fields.String(required=True)
    key = fields.String(required=True, allow_none=True)
    filters = fields.Dict(required=True)


ReportRow = type("ReportRow", (Schema,), {
    "key": fields.String(required=True, allow_none=True, metadata={"description": "null: not known for these "
                                                                                  "entries"}),
    **{f"{m}_{unit}": fields.Integer(required=True) for m in REPORT_MEASURES for unit in ("fen", "count")},
    "drilldown": fields.Nested(Drilldown, required=True)})


class ReportOut(Schema):
    by = fields.String(required=True, validate=validate.OneOf(DIMENSIONS))
    filters = fields.Dict(required=True)
    rows = fields.List(fields.Nested(ReportRow), required=True)
    through_position = fields.Integer(required=True, metadata={"description": "the last ledger entry included"})


class DrilldownItem(Schema):
    position = fields.Integer(required=True)
    event_id = fields.String(required=True)
    type = fields.String(required=True)
    fen = fields.Integer(required=True)
    count = fields.Integer(required=True)
    voucher = fields.String(required=True, allow_none=True)
    cursor = fields.String(required=True)


class DrilldownOut(Schema):
    measure = fields.String(required=True, validate=validate.OneOf(REPORT_MEASURES))
    filters = fields.Dict(required=True)
    items = fields.List(fields.Nested(DrilldownItem), required=True)
    total_fen = fields.Integer(required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class EntryRef(Schema):
    position = fields.Integer(required=True)
    event_id = fields.String(required=True)
    type = fields.String(required=True)


class VoucherDifference(Schema):
    voucher_id = fields.String(required=True)
    differences = fields.Dict(required=True, metadata={"description": "bucket -> {ledger, service}"})
    entries = fields.List(fields.Nested(EntryRef), required=True)
    missing_in = fields.String()


class ProgrammeReconciliation(Schema):
    programme_id = fields.String(required=True)
    ok = fields.Boolean(required=True)
    differences = fields.Dict(required=True, metadata={"description": "bucket -> {ledger, service}"})
    vouchers = fields.List(fields.Nested(VoucherDifference), required=True)
    entries = fields.List(fields.Nested(EntryRef), required=True)
    missing_in = fields.String(validate=validate.OneOf(("ledger", "vouchers service")))


LedgerBalance = type("LedgerBalance", (Schema,), {
    "programme_id": fields.String(required=True),
    **{bucket: fields.Integer(required=True) for bucket in ("budget",) + BUCKETS}})


class ReconciliationOut(Schema):
    ok = fields.Boolean(required=True)
    compared = fields.Boolean(required=True, metadata={"description": "false: the vouchers service did not answer; "
                                                                      "only the ledger's side is given"})
    reason = fields.String()
    ledger_size = fields.Integer(required=True)
    through_position = fields.Integer(required=True)
    programmes = fields.List(fields.Nested(ProgrammeReconciliation))
    next_cursor = fields.String(allow_none=True, metadata={"description": "pass as `after` for the next page"})
    ledger_balances = fields.List(fields.Nested(LedgerBalance))


class AnomalyOut(Schema):
    anomaly_id = fields.String(required=True)
    rule = fields.String(required=True, validate=validate.OneOf(RULES))
    summary = fields.String(required=True)
    subject = fields.Dict(required=True, metadata={"description": "the ids the flag is about"})
    evidence_event_ids = fields.List(fields.String(), required=True)
    ledger_positions = fields.List(fields.Integer(), required=True)
    detected_at = fields.String(required=True)


class AnomalyPage(Schema):
    items = fields.List(fields.Nested(AnomalyOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)
