"""The documents service: delivery materials (contract, invoice, payment proof, deliverable) as files
in object storage, each with the SHA-256 the server computed, checkable against the audit ledger."""
from services.portal.clients import ApiClient, ApiError


class DocumentsClient(ApiClient):
    def upload_document(self, order_id, kind, filename, content, media_type):
        """The stored document, or None while no documents service answers behind the ingress."""
        try:
            return self._request("POST", "/api/v1/documents", data={"order_id": order_id, "kind": kind},
                                 files={"file": (filename, content, media_type or "application/octet-stream")})
        except ApiError as exc:
            if exc.status == 404 and exc.message == "no such route":
                return None
            raise

    def documents_of_order(self, order_id):
        """The order's files, or None while no documents service answers behind the ingress."""
        try:
            return self.get("/api/v1/documents", order_id=order_id)["items"]
        except ApiError as exc:
            if exc.status == 404 and exc.message == "no such route":
                return None
            raise

    def download_document(self, document_id):
        return self._request("GET", f"/api/v1/documents/{document_id}/content", stream=True)

    def verify_document(self, document_id):
        return self.get(f"/api/v1/documents/{document_id}/verify")


documents_api = DocumentsClient()
