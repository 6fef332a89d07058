"""The enterprises service: SMEs, their quality-tier qualifications and their inbox."""
from services.portal.clients import ApiClient


class EnterprisesClient(ApiClient):
    def get_enterprises(self, q=None, region=None):
        return self.all_pages("/api/v1/enterprises", limit=200, q=q, region=region)

    def get_enterprise(self, enterprise_id):
        return self.get(f"/api/v1/enterprises/{enterprise_id}")

    def register_enterprise(self, details):
        return self.post("/api/v1/enterprises", details)

    def verify_enterprise(self, enterprise_id, method, reference):
        return self.post(f"/api/v1/enterprises/{enterprise_id}/verification", {"method": method, "reference": reference})

    def get_qualifications(self, enterprise_id):
        return self.get(f"/api/v1/enterprises/{enterprise_id}/qualifications")["items"]

    def grant_qualification(self, enterprise_id, qualification):
        return self.post(f"/api/v1/enterprises/{enterprise_id}/qualifications", qualification)

    def revoke_qualification(self, enterprise_id, qualification_id, reason):
        return self.post(f"/api/v1/enterprises/{enterprise_id}/qualifications/{qualification_id}/revoke",
                         {"reason": reason})

    def get_tiers(self, enterprise_id):
        return self.get(f"/api/v1/enterprises/{enterprise_id}/tiers")

    def get_notifications(self, enterprise_id, unread=None):
        return self.get(f"/api/v1/enterprises/{enterprise_id}/notifications", limit=50,
                        unread="true" if unread else None)["items"]

    def mark_notification_read(self, enterprise_id, notification_id):
        return self.post(f"/api/v1/enterprises/{enterprise_id}/notifications/{notification_id}/read")


enterprises_api = EnterprisesClient()
