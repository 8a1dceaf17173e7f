"""Formats: what an exporter writes. One module per format, the format table, and the artifact helpers."""
