"""The Redis hot tier: keys, connection, scripts and the typed calls on them."""
