"""Helpers the tests share: waiting on conditions, following topics, wiring services."""
