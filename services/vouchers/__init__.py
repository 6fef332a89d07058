"""The vouchers service: programmes and their budgets, voucher issuance, orders, delivery, claims and payment."""
