"""What every service needs and nothing else: events, storage with outbox, consumers with
retries and dead letters, HTTP helpers, auth, metrics, config and clock."""
