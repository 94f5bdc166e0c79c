"""Pure functions: observed snapshot + declared container + profile -> findings."""
