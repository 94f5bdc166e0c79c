"""opaudit: compares what a pod declares with what the kernel enforces on its processes."""

__version__ = "0.1.0"
