"""Tests of the CLI commands that talk to a running server."""
