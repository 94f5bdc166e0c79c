"""Helpers for scripts/bench: staging at scale, whole-process timing, the result table."""
