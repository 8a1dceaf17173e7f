"""Command-line entry points (``hvit-export``, ``hvit-bench``)."""
