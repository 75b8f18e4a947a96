"""Audit: the append-only, hash-chained event log, its verification and its reading."""
