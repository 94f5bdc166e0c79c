"""Kernel facts: reads /proc, network namespaces and container roots. Knows nothing of Kubernetes."""
