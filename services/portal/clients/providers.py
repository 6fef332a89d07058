"""The providers service: agencies, credit ratings and evaluations, recommendations."""
from services.portal.clients import ApiClient


class ProvidersClient(ApiClient):
    def get_agencies(self, **filters):
        return self.all_pages("/api/v1/agencies", limit=200, **filters)

    def get_agency(self, agency_id):
        return self.get(f"/api/v1/agencies/{agency_id}")

    def get_rating(self, agency_id):
        return self.get(f"/api/v1/agencies/{agency_id}/rating")

    def get_evaluations(self, agency_id):
        return self.get(f"/api/v1/agencies/{agency_id}/evaluations")["items"]

    def record_evaluation(self, agency_id, evaluation):
        return self.post(f"/api/v1/agencies/{agency_id}/evaluations", evaluation)

    def recommend_agencies(self, service_code, region=None, limit=10):
        return self.get("/api/v1/recommendations", service_code=service_code, region=region, limit=limit)["items"]


providers_api = ProvidersClient()
