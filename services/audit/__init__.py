"""The audit service: not built yet (see the open issues)."""
