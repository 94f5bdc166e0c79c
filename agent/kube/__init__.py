"""Kubernetes API access: pod discovery, declared spec, Events. Imported lazily."""
