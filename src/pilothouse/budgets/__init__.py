"""Budgets: limits on spend per scope and window, enforced through a ledger of reservations."""
