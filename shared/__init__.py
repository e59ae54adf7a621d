"""sendrail: the library every sendrail service imports."""
