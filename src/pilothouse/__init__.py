"""Pilothouse: the control plane for software agents."""

__version__ = "0.1.0"
