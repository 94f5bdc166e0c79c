"""Sinks that render findings: table, JSON/YAML, Kubernetes Events."""
