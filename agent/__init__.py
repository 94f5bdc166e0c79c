"""opaudit: compares what a pod declares with what the kernel enforces on its processes.

The layers, and the flow from /proc to an Event, a report or a table: docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
