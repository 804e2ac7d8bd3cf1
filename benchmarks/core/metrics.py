"""The metric registry: every metric a row may carry, with its unit, direction, labels and precision.

Rows whose ``metric`` is not registered are refused by the store, and a row's ``unit`` is always the
registry's. Tables and figures take labels (plain and LaTeX), units and printing precision from
here, and "best" means ``higher_is_better`` for each metric.

Conventions that every counting metric shares (stated once, used by every table):

- ``flops_*``: FLOPs = 2 per multiply-accumulate + 1 per elementwise operation or reduced element
  (softmax 5 per element, its backward 4; an L2 norm 2 per element); see :mod:`benchmarks.core.flops`.
- ``macs_*``: multiply-accumulates of matrix products, convolutions and linear layers only.
- ``elementwise_*``: the elementwise and reduction work, counted separately from MACs.

Metrics that several studies share (the training metrics below) are registered here; a study's own
metrics come with its record (``Study.metrics``, registered with the study by
:func:`benchmarks.core.registry.register`); re-registering a name with different fields is an error.

>>> METRICS["latency_ms"].unit, METRICS["latency_ms"].higher_is_better
('ms', False)
>>> get("bogus_metric")
Traceback (most recent call last):
...
ValueError: unknown metric 'bogus_metric'; register it in benchmarks/core/metrics.py (known: ...)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One registered metric."""

    name: str
    unit: str  # plain unit string written on every row ("1" for a dimensionless fraction)
    higher_is_better: bool | None  # None: neither (a count that describes, e.g. tokens)
    label: str  # plain-text label (README, figures)
    latex: str  # LaTeX label (tables); units go in the column header, from ``latex_unit``
    precision: int  # decimals when printed
    latex_unit: str = ""  # siunitx unit macro text, e.g. r"\milli\second"
    description: str = ""


METRICS: dict[str, Metric] = {}


def register(
    name: str,
    unit: str,
    higher_is_better: bool | None,
    label: str,
    latex: str | None = None,
    precision: int = 3,
    latex_unit: str = "",
    description: str = "",
) -> Metric:
    """Add a metric (idempotent for identical fields; a conflicting re-registration raises)."""
    m = Metric(name, unit, higher_is_better, label, latex or label, precision, latex_unit, description)
    return register_metric(m)


def register_metric(m: Metric) -> Metric:
    """Add a :class:`Metric` record (idempotent for identical fields; a conflicting one raises)."""
    old = METRICS.get(m.name)
    if old is not None and old != m:
        raise ValueError(f"metric {m.name!r} is already registered with different fields: {old}")
    METRICS[m.name] = m
    return m


def get(name: str) -> Metric:
    """The registered metric ``name`` (ValueError naming the fix when it is unknown)."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(
            f"unknown metric {name!r}; register it in benchmarks/core/metrics.py (known: {', '.join(sorted(METRICS))})"
        ) from None


DEVICE_UNITS = ("ms", "s", "MiB", "tokens/s", "images/s", "GB/s")  # time, memory, throughput


def device_bound(name: str) -> bool:
    """Whether a metric measures the device it ran on (time, memory, throughput: its unit is in
    :data:`DEVICE_UNITS`); such numbers are never pooled across devices.

    >>> device_bound("latency_ms"), device_bound("flops_torch")
    (True, False)
    """
    return get(name).unit in DEVICE_UNITS


def unit(name: str) -> str:
    """The unit string of a registered metric."""
    return get(name).unit


# ------------------------------------------------------------------------------ complexity metrics
register("flops_analytic", "FLOPs", False, "FLOPs (formula)", r"FLOPs (formula)", 0,
         description="benchmarks.core.flops.analytic_counts; fwd+bwd = 3 x forward")  # fmt: skip
register("macs_analytic", "MACs", False, "MACs (formula)", r"MACs (formula)", 0,
         description="multiply-accumulates of matrix products only")  # fmt: skip
register("elementwise_analytic", "ops", False, "elementwise ops (formula)", r"elementwise ops (formula)", 0,
         description="elementwise and reduction operations, 1 per element (softmax 5)")  # fmt: skip
register("flops_torch", "FLOPs", False, "FLOPs (counted)", r"FLOPs (counted)", 0,
         description="torch.utils.flop_counter.FlopCounterMode with the project's mappings")  # fmt: skip
register("macs_fvcore", "MACs", False, "MACs (fvcore)", r"MACs (fvcore)", 0,
         description="fvcore's matrix-product, convolution and linear handles (forward only)")  # fmt: skip
register("peak_mib", "MiB", False, "peak memory", r"peak memory", 2, r"\mebi\byte",
         description="CPU: dispatch-level live-tensor tracker; CUDA: max_memory_allocated delta")  # fmt: skip
register("peak_mib_profiler", "MiB", False, "peak memory (profiler)", r"peak memory (profiler)", 2,
         r"\mebi\byte", description="torch.profiler allocation events; sees kernels' scratch buffers")  # fmt: skip
register("latency_ms", "ms", False, "latency", r"latency", 3, r"\milli\second",
         description="median over interleaved rounds of repeated calls")  # fmt: skip
register("tokens_per_s", "tokens/s", True, "throughput", r"throughput", 0, r"tokens\per\second")
register("images_per_s", "images/s", True, "throughput", r"throughput", 2, r"images\per\second")
register("achieved_gbps", "GB/s", True, "achieved bandwidth", r"achieved bandwidth", 1,
         r"\giga\byte\per\second", description="least DRAM traffic of the core / latency")  # fmt: skip
register("params", "count", None, "parameters", r"parameters", 0)
register("gflops_ultralytics", "GFLOPs", False, "GFLOPs (Ultralytics' estimate)", r"GFLOPs (Ultralytics)", 1,
         description="model.info()'s thop figure: hooks on a proxy image, scaled by area")  # fmt: skip

# ------------------------------------------------------- training metrics (detection and classification)
# One convention for every study that trains: parameters (above), GFLOPs counted by FlopCounterMode at
# the training image size (2 per multiply-add, benchmarks.core.flops.model_gflops), the training
# epochs' wall time (validation excluded) and the peak memory of one training step.
register("gflops", "GFLOPs", False, "GFLOPs (counted)", r"GFLOPs", 2)
register("train_time_s", "s", False, "training time", r"train time (s)", 1)
register("train_peak_mib", "MiB", False, "training-step peak memory", r"train peak (MiB)", 1)
