"""The vouchers service's business gauges (names agreed with ops and audit). Recomputed from
storage, so every pod reports the same figures; `programme` is the one id-like label allowed
(programmes are few and officer-created)."""
from prometheus_client import Gauge

BUDGET = Gauge("ipv_programme_budget_fen", "Programme budget by conservation bucket (fen)", ["programme", "bucket"])
BUDGET_TOTAL = Gauge("ipv_programme_budget_total_fen", "Programme total budget (fen)", ["programme"])
OUTSTANDING = Gauge("ipv_vouchers_outstanding", "Live vouchers", ["programme"])
CLAIMS_PENDING = Gauge("ipv_claims_pending", "Claims waiting for an officer", ["state"])


def set_programme(balance, live_vouchers):
    programme = balance["programme_id"]
    for bucket in ("remaining", "free", "held", "paid", "returned"):
        BUDGET.labels(programme, bucket).set(balance[f"{bucket}_fen"])
    BUDGET_TOTAL.labels(programme).set(balance["budget_fen"])
    OUTSTANDING.labels(programme).set(live_vouchers)


def set_claims(counts):
    for state in ("submitted", "approved"):
        CLAIMS_PENDING.labels(state).set(counts.get(state) or 0)
