"""harness: gate ML model merges on accuracy, latency and memory across a device matrix.

Kept import-free: the worker runs this package inside device containers with only the standard
library, numpy and one runtime available.
"""

__version__ = "0.1.0"
