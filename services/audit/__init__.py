"""The audit service: the hash-chained ledger of every event with signed checkpoints, fund-use reports,
reconciliation and red flags."""
