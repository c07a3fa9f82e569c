"""The SQL cold tier (the source of truth): tables, engine, every statement, schema."""
