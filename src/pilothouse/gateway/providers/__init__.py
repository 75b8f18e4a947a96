"""Providers: one module each, all behind the Provider protocol."""
