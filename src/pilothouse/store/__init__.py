"""The store: engine, connections, schema wiring and migrations. Domains own their tables."""
