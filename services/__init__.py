"""The sendrail services, one folder each."""
