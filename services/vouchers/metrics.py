"""The vouchers service's business gauges (names agreed with ops and audit). Each write moves them
by what it moved; the `refresh_metrics` timer recomputes them from storage, so every pod reports the
same figures within its interval. `programme` is the one id-like label allowed (programmes are few
and officer-created)."""
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


def set_budget(programme):
    """From a programme document a write returned: its total and never-issued budget."""
    BUDGET.labels(programme["_id"], "remaining").set(programme["remaining_fen"])
    BUDGET_TOTAL.labels(programme["_id"]).set(programme["budget_fen"])


def issued(programme, face_value_fen):
    """A voucher issued from the reservation `programme` (the document the reserving write returned)."""
    set_budget(programme)
    BUDGET.labels(programme["_id"], "free").inc(face_value_fen)
    OUTSTANDING.labels(programme["_id"]).inc()


def moved(programme, inc, ended=False):
    """A voucher write's `$inc` of the buckets and pending claims; `ended` when it expired or revoked it."""
    for bucket in ("free", "held", "paid", "returned"):
        if inc.get(f"{bucket}_fen"):
            BUDGET.labels(programme, bucket).inc(inc[f"{bucket}_fen"])
    for state in ("submitted", "approved"):
        if inc.get(f"claims_{state}"):
            CLAIMS_PENDING.labels(state).inc(inc[f"claims_{state}"])
    if ended:
        OUTSTANDING.labels(programme).dec()
