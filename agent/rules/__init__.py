"""Pure functions: observed snapshot + declared container + profile -> findings.

The engine calls, in order: `profiles.match_profile`, `paths.required_paths` (what to probe
for writability), then `evaluate.evaluate`. `rules` imports nothing from the package but
`agent.model`. (Nothing is imported here, so `python -m agent.rules.catalogue` runs clean.)
Where a new rule goes: docs/ARCHITECTURE.md.
"""
