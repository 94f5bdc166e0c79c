"""Kernel facts from /proc, network namespaces and container roots (nothing of Kubernetes).

The modules are ranked (errors < fileio < parsers < procfs < readers): docs/ARCHITECTURE.md
says which is which and where a new fact goes.
"""
