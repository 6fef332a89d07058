"""The vouchers service: programmes, vouchers, orders, claims."""
from services.portal.clients import ApiClient


class VouchersClient(ApiClient):
    # programmes
    def get_programmes(self, status=None):
        return self.all_pages("/api/v1/programmes", limit=200, status=status)

    def get_programme(self, programme_id):
        return self.get(f"/api/v1/programmes/{programme_id}")

    def get_programme_balances(self, programme_id):
        return self.get(f"/api/v1/programmes/{programme_id}/balances")

    def get_programme_balances_recounted(self, programme_id):
        return self.get(f"/api/v1/programmes/{programme_id}/balances/recounted")

    def create_programme(self, terms):
        return self.post("/api/v1/programmes", terms)

    def change_programme(self, programme_id, terms):
        return self.put(f"/api/v1/programmes/{programme_id}", terms)

    def open_programme(self, programme_id):
        return self.post(f"/api/v1/programmes/{programme_id}/open")

    def close_programme(self, programme_id):
        return self.post(f"/api/v1/programmes/{programme_id}/close")

    # vouchers
    def apply_for_voucher(self, programme_id, tier=None, idempotency_key=None):
        body = {"programme_id": programme_id}
        if tier:
            body["tier"] = tier
        return self.post("/api/v1/vouchers", body, idempotency_key=idempotency_key)

    def get_vouchers(self, programme_id=None, status=None):
        return self.all_pages("/api/v1/vouchers", limit=200, programme_id=programme_id, status=status)

    def get_voucher(self, voucher_id):
        return self.get(f"/api/v1/vouchers/{voucher_id}")

    # orders
    def place_order(self, voucher_id, agency_id, service_code, price_fen, deliver_by, idempotency_key=None):
        return self.post("/api/v1/orders", {"voucher_id": voucher_id, "agency_id": agency_id,
                                            "service_code": service_code, "price_fen": price_fen,
                                            "deliver_by": deliver_by}, idempotency_key=idempotency_key)

    def get_orders(self, voucher_id=None, state=None):
        return self.all_pages("/api/v1/orders", limit=200, voucher_id=voucher_id, state=state)

    def get_order(self, order_id):
        return self.get(f"/api/v1/orders/{order_id}")

    def deliver_order(self, order_id, evidence):
        return self.post(f"/api/v1/orders/{order_id}/deliver", evidence)

    def confirm_delivery(self, order_id):
        return self.post(f"/api/v1/orders/{order_id}/confirm")

    def dispute_delivery(self, order_id, reason):
        return self.post(f"/api/v1/orders/{order_id}/dispute", {"reason": reason})

    def cancel_order(self, order_id, reason):
        return self.post(f"/api/v1/orders/{order_id}/cancel", {"reason": reason})

    # claims
    def submit_claim(self, order_id):
        return self.post("/api/v1/claims", {"order_id": order_id})

    def get_claims(self, state=None):
        return self.all_pages("/api/v1/claims", limit=200, state=state)

    def get_claim(self, claim_id):
        return self.get(f"/api/v1/claims/{claim_id}")

    def approve_claim(self, claim_id):
        return self.post(f"/api/v1/claims/{claim_id}/approve")

    def reject_claim(self, claim_id, reason):
        return self.post(f"/api/v1/claims/{claim_id}/reject", {"reason": reason})

    def record_payment(self, claim_id, payment_ref, paid_on=None):
        body = {"payment_ref": payment_ref}
        if paid_on:
            body["paid_on"] = paid_on
        return self.post(f"/api/v1/claims/{claim_id}/pay", body)


vouchers_api = VouchersClient()
