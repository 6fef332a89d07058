"""The providers service: not built yet (see the open issues)."""
