"""The vouchers service: not built yet (see the open issues)."""
