"""The harness's core: it runs records and knows no study.

Suites (:mod:`.suites`) -> cells (:mod:`.cells`) -> the runner (:mod:`.runner`) -> runs and rows
(:mod:`.store`), with the metric registry (:mod:`.metrics`), statistics and the summary pipeline
(:mod:`.stats`), FLOP counting (:mod:`.flops`), measurement (:mod:`.measure`), estimates
(:mod:`.estimate`), the reproduction check (:mod:`.reproduce`), scale-out (:mod:`.scaleout`,
:mod:`.jobs`), README blocks (:mod:`.readme`), the paper's figures (:mod:`.paper`), section bases
and errors (:mod:`.schema`) and the study registry (:mod:`.registry`). No module here imports
``benchmarks.studies``.
"""
