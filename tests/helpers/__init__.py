"""Shared test helpers, imported as `from tests.helpers.<module> import ...`."""
