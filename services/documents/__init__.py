"""The documents service: files uploaded for orders (contracts, invoices, payment proofs, deliverables)."""
