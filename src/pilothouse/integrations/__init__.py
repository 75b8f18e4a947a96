"""Integrations with agent harnesses; each module needs its harness's package installed.

- :mod:`pilothouse.integrations.openhands`: a security analyzer for the ``openhands-sdk``
  package (Python 3.12 or newer, as the SDK requires) that asks Pilothouse before each action.
"""
