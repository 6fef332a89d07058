"""Every event type's data schema, by producer, so producers and consumers validate one shape.
Importing this package registers them all."""
from ipvkit.contracts import audit, enterprise, identity, provider, voucher  # noqa: F401
