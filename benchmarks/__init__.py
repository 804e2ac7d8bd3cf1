"""Benchmark harness for TSSA: suite -> cells -> runs -> rows -> summaries -> report.

``benchmarks.core`` knows no study; the studies (``benchmarks.studies.complexity``, ``.detection``,
``.classification``) register themselves with its registry when imported; ``benchmarks.report``
asks every registered study for its part. The map of the house is ``benchmarks/README.md``.
"""
