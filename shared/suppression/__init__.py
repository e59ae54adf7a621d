"""Each tenant's suppression list: addresses it no longer sends to."""
