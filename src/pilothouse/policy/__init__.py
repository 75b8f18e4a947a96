"""Policies on agent actions: what a command, a query or a request would do, and the rules."""
