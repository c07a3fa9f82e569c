"""The write-behind outbox: entries, leases, applying batches, the flusher, dead letters."""
