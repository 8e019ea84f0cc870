"""The flywheel's benchmark: `python -m bench [--quick]` (docs/PERFORMANCE.md)."""
