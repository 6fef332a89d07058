"""The audit service: the ledger, its proofs, fund-use reports, reconciliation, red flags."""
from services.portal.clients import ApiClient


class AuditClient(ApiClient):
    def get_head(self):
        return self.get("/api/v1/audit/head")

    def verify_ledger(self):
        return self.get("/api/v1/audit/verify")

    def get_entries(self, type=None, after=-1, limit=100):
        return self.get("/api/v1/audit/entries", type=type, after=after, limit=limit)

    def get_entries_of_type(self, type):
        return self.all_pages("/api/v1/audit/entries", type=type, after=-1, limit=500)

    def get_entry(self, position):
        return self.get(f"/api/v1/audit/entries/{position}")

    def get_inclusion_proof(self, position):
        return self.get(f"/api/v1/audit/entries/{position}/proof")

    def get_checkpoints(self):
        return self.get("/api/v1/audit/checkpoints", limit=500)

    def get_public_key(self):
        return self.get("/api/v1/audit/public-key")

    def get_fund_use(self, by, **filters):
        return self.get("/api/v1/audit/reports/fund-use", by=by, **filters)

    def get_fund_use_entries(self, measure, after=None, **filters):
        return self.get("/api/v1/audit/reports/fund-use/entries", measure=measure, after=after, limit=200, **filters)

    def reconcile(self, programme=None):
        return self.get("/api/v1/audit/reconciliation", programme=programme)

    def get_anomalies(self, rule=None):
        return self.get("/api/v1/audit/anomalies", rule=rule, limit=200)["items"]

    def get_anomaly(self, anomaly_id):
        return self.get(f"/api/v1/audit/anomalies/{anomaly_id}")

    def stream_export(self):
        return self._request("GET", "/api/v1/audit/export", stream=True)


audit_api = AuditClient()
