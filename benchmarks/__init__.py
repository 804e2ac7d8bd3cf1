"""Benchmark harness for TSSA: suites of cells -> result rows with provenance -> reports."""
