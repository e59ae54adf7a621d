"""Capped exponential backoff with jitter; pure, the randomness comes in as an argument."""


def backoff_s(attempt: int, *, base_s: float, max_s: float, jitter: float) -> float:
    """Wait before retry number `attempt` (1-based): between half and all of
    min(max_s, base_s · 2^(attempt-1)), placed by `jitter` ∈ [0, 1) ("equal jitter"),
    so retries of many connections spread out instead of arriving together."""
    doublings = min(max(0, attempt - 1), 64)  # far past any cap, and no float overflow
    ceiling = min(max_s, base_s * 2.0**doublings)
    return float(ceiling * (0.5 + jitter / 2))
