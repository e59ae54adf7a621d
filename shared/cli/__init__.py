"""The `sendrail` command."""
