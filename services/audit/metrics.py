"""The audit service's business metrics (names agreed for every service; no ids in labels)."""
from prometheus_client import Counter, Gauge, Histogram

LEDGER_ENTRIES = Gauge("ipv_audit_ledger_entries", "Entries in the audit ledger (the head's size)")
LAG = Histogram("ipv_audit_lag_seconds", "From an event's occurred_at to its append to the ledger",
                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
PROJECTION_LAG = Histogram("ipv_audit_projection_lag_seconds", "From an entry's append to the ledger to its "
                           "application to the read models (red flags, reports, reconciliation)",
                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 5, 10, 30, 60, 300))
PROJECTOR_BEHIND = Gauge("ipv_audit_projector_behind_entries", "Ledger entries not yet applied to the read models "
                         "(red flags, reports): the head's size less the projector's cursor")
ANOMALIES = Counter("ipv_audit_anomalies_total", "Red flags raised, by rule", ["rule"])
LEDGER_PROBLEMS = Gauge("ipv_audit_ledger_problems", "Problems the last check before signing a checkpoint found in "
                        "the ledger (0: it verified); while above 0 no checkpoint is signed")
