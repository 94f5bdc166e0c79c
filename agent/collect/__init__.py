"""Kernel facts from /proc, network namespaces and container roots (nothing of Kubernetes)."""
