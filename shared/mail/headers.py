"""Headers sendrail sets on every message so that a bounce can be tied back to its send."""

from typing import Final

SEND_ID_HEADER: Final = "X-Sendrail-Send-Id"
"""Carries the send id; bounces that quote the original's headers give it back."""
