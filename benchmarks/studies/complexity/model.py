"""Model cells: a YOLO11 variant or a timm model at one square image size.

Per cell: the tokens each attention layer sees (``attn_tokens``; the row's ``tokens`` is the
largest), ``params``, ``flops_torch``, ``macs_fvcore`` (``fwd``), ``peak_mib`` (the tracker: for
``fwd+bwd`` the peak of a whole training step, forward plus backward, in train mode),
``peak_mib_profiler`` (allocation events, kernels' scratch buffers included), ``latency_ms`` and
``images_per_s``. Weights come from the suite's seed, so variants that differ only in their
attention start equal elsewhere.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import warnings
from typing import Any

import torch

from benchmarks.core import impl as _impl
from benchmarks.core.cells import Cell
from benchmarks.core.flops import count_macs_fvcore, count_reference_flops
from benchmarks.core.measure import MIB, count_call, profiler_peak_bytes, time_interleaved, torch_threads
from benchmarks.core.runner import Context, Group, Outcome, reason

FAMILIES = ("yolo", "timm")


def build_model(family: str, variant: str, image_size: int) -> torch.nn.Module:
    """A YOLO11 detection model from ``<variant>.yaml`` or a timm model at ``img_size=image_size``
    (ImportError when the project's integration is not importable)."""
    if family == "yolo":
        importlib.import_module("tssa.ultralytics")  # offline settings and registration first
        yolo = importlib.import_module("ultralytics").YOLO
        return yolo(f"{variant}.yaml").model
    if family == "timm":
        import timm

        import tssa.timm  # noqa: F401  (registers the ToST family)

        return timm.create_model(variant, img_size=image_size, pretrained=False)
    raise ValueError(f"unknown model family {family!r}; use 'yolo' or 'timm'")


@functools.cache
def _model_impls(family: str, variant: str) -> frozenset[str]:
    return _impl.impls_of(build_model(family, variant, 224))


def check_model(family: str, variant: str) -> None:
    """ValueError naming the allowed names when a model variant is unknown to its family's registry."""
    if family == "yolo":
        import tssa.ultralytics as tu

        m = re.fullmatch(r"yolo11([nsmlx])(-.+)?", variant)
        base = f"yolo11{m.group(2) or ''}" if m else None
        if base not in tu.VARIANTS:
            allowed = ", ".join(f"yolo11<n|s|m|l|x>{v[6:]}" for v in tu.VARIANTS)
            raise ValueError(f"unknown YOLO variant {variant!r}; allowed: {allowed}")
    elif family == "timm":
        import timm

        import tssa.timm  # noqa: F401

        if not timm.is_model(variant):
            raise ValueError(
                f"unknown timm model {variant!r}; `timm.list_models('tost_*')` lists the ToST family"
            )
    else:
        raise ValueError(f"unknown model family {family!r}; use 'yolo' or 'timm'")


_ATTN_CLASS = re.compile(r"Attention|TSSA|XCA|ClassAttn|TokenMixer")


def attention_tokens(model: torch.nn.Module, x: torch.Tensor) -> list[int]:
    """Tokens each attention layer sees in ``model(x)``: N of (B, N, C) inputs, H*W of (B, C, H, W).

    An attention layer is a module whose class name names attention (Attention, TSSA, XCA, class
    attention) or that sits under an attribute called ``attn``, and that is not inside another one;
    blocks without a token mixer (``C2NoAttn``) are not attention.
    """

    def is_attn(name, m):
        cls = type(m).__name__
        if "NoAttn" in cls:
            return False
        return bool(_ATTN_CLASS.search(cls)) or name.rsplit(".", 1)[-1] == "attn"

    outer = []
    for name, m in model.named_modules():
        if name and is_attn(name, m) and not any(name.startswith(o + ".") for o, _ in outer):
            outer.append((name, m))
    seen: list[int] = []

    def hook(mod, inputs):
        t = inputs[0] if inputs else None
        if isinstance(t, torch.Tensor):
            seen.append(int(t.shape[1]) if t.dim() == 3 else int(math.prod(t.shape[2:])))

    handles = [m.register_forward_pre_hook(hook) for _, m in outer]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _prediction(cell: Cell, history: list[dict[str, Any]], metric: str) -> tuple[float, int] | None:
    best = None
    for r in history:
        if r["metric"] != metric or r.get("level") != "model" or r["error"] is not None:
            continue
        if any(r.get(k) != cell[k] for k in ("family", "variant", "pass", "device", "batch", "threads")):
            continue
        if r["image_size"] < cell["image_size"] and (best is None or r["image_size"] > best[1]):
            best = (r["value"], r["image_size"])
    if best is None:
        return None
    return best[0] * (cell["image_size"] / best[1]) ** 4, best[1]  # tokens ~ S^2, quadratic attention


def execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
    """Measure one image size's models on the cells' thread count; the process's own count is restored afterwards."""
    with torch_threads(cells[0]["threads"]):
        return _execute(cells, ctx)


def _execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
    """Measure one image size's models: counted call, fvcore, profiler, then interleaved timing."""
    suite = ctx.suite
    md = suite["complexity"]["model"]
    timeout_s, budget = suite["timeout_s"], suite["memory_budget_gib"] * 2**30
    device, threads = cells[0]["device"], cells[0]["threads"]
    history = ctx.history()
    out: dict[str, Outcome] = {}
    steps, static = {}, {}
    for cell in cells:
        t = _prediction(cell, history, "latency_ms")
        if t is not None and t[0] / 1e3 > timeout_s:
            out[cell.id] = Outcome(
                skipped=f"timeout: predicted {t[0] / 1e3:.0f} s per call from {t[1]}px exceeds the time "
                f"limit of {timeout_s:g} s"
            )
            continue
        m = _prediction(cell, history, "peak_mib")
        if m is not None and m[0] * MIB > budget:
            out[cell.id] = Outcome(
                skipped=f"predicted peak {m[0] / 1024:.1f} GiB from {m[1]}px exceeds the memory budget of "
                f"{budget / 2**30:g} GiB (out of memory)"
            )
            continue
        try:
            steps[cell.id], static[cell.id] = _prepare(cell, ctx, md, timeout_s)
        except Exception as exc:
            out[cell.id] = Outcome(failed=reason(exc))
    by_id = {c.id: c for c in cells}
    if not md["timing"]:  # count-only cells
        return out | {cid: Outcome(rows=static[cid][0]) for cid in steps}
    timings = time_interleaved(
        steps, device=device, rounds=md["rounds"], min_run_time=md["min_run_time"], threads=threads,
        guard_s=2 * timeout_s + md["min_run_time"],
    )  # fmt: skip
    for cid, t in timings.items():
        cell = by_id[cid]
        if t.error is not None:
            out[cid] = Outcome(failed=t.error)
            continue
        rows, extra = static[cid]
        rows = rows + [
            ctx.row(cell, "latency_ms", 1e3 * t.median, iqr_ms=1e3 * t.iqr, min_ms=1e3 * t.fastest,
                    samples=len(t.samples), calls=t.calls, **extra, **t.provenance()),
            ctx.row(cell, "images_per_s", cell["batch"] / t.median, samples=len(t.samples), **extra),
        ]  # fmt: skip
        out[cid] = Outcome(rows=rows)
        ctx.log(f"  {cell['variant']:>30s} {cell['pass']:7s} {cell['image_size']:5d}px "
                f"{1e3 * t.median:10.1f} ms ({len(t.samples)} samples)")  # fmt: skip
    return out


def _prepare(cell: Cell, ctx: Context, md: dict, timeout_s: float):
    family, variant, size = cell["family"], cell["variant"], cell["image_size"]
    device, grad = cell["device"], cell["pass"] == "fwd+bwd"
    torch.manual_seed(ctx.suite["seed"])  # weights from a fixed seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(family, variant, size).to(device)
    gen = torch.Generator().manual_seed(ctx.suite["seed"])
    x = torch.randn(cell["batch"], 3, size, size, generator=gen).to(device)
    tokens = attention_tokens(model.eval(), x)
    model.train(grad)  # fwd: eval mode under no_grad; fwd+bwd: a training step (train mode, backward)

    def scalar(out):
        leaves = [t for t in torch.utils._pytree.tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return sum(t.float().sum() for t in leaves if t.is_floating_point())

    if grad:

        def step():
            model.zero_grad(set_to_none=True)
            scalar(model(x)).backward()
    else:

        def step():
            with torch.no_grad():
                model(x)

    tok = max(tokens) if tokens else None
    extra = {"attn_tokens": tokens, "tokens": tok}
    peak, _, _ = count_call(step, device, timeout_s, flops=False)
    flops = count_reference_flops(step)  # TSSA through its reference equations
    n_params = sum(p.numel() for p in model.parameters())
    rows = [
        ctx.row(cell, "params", n_params, **extra),
        ctx.row(cell, "flops_torch", flops, **extra),
        ctx.row(cell, "peak_mib", peak / MIB, bytes=peak, tracker="LiveTensorTracker", **extra),
    ]
    if device == "cpu" and size <= md["profile_max_size"]:
        ppeak = profiler_peak_bytes(step)
        rows.append(
            ctx.row(cell, "peak_mib_profiler", ppeak / MIB, bytes=ppeak, tracker="torch.profiler", **extra)
        )
    if not grad and family == "yolo":
        from ultralytics.utils.torch_utils import get_flops

        rows.append(ctx.row(cell, "gflops_ultralytics", float(get_flops(model, size)), **extra))
        model.train(grad)
    if not grad:
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                macs, unsupported = count_macs_fvcore(model, x)
                rows.append(ctx.row(cell, "macs_fvcore", macs, unsupported=unsupported,
                                    complete=not unsupported, **extra))  # fmt: skip
            except Exception as exc:  # tracing a model can fail; the row says so
                rows.append(
                    ctx.row(cell, "macs_fvcore", None, error=f"fvcore could not trace: {exc}"[:300], **extra)
                )
    return step, (rows, extra)


def plan(suite_name: str, suite: dict[str, Any]) -> list[Group]:
    """Groups of the model sweep: one per (pass, family, image size), the family's variants interleaved."""
    md = suite["complexity"]["model"]
    settings = {k: md[k] for k in ("rounds", "min_run_time", "profile_max_size", "timing")} | {
        "memory_budget_gib": suite["memory_budget_gib"], "timeout_s": suite["timeout_s"], "seed": suite["seed"],
    }  # fmt: skip
    groups = []
    for pass_ in md["passes"]:
        for fam in FAMILIES:
            if md.get(fam) is None:
                continue
            for s in md[fam]["image_sizes"]:
                cells = [
                    Cell.make(
                        "complexity",
                        {
                            "level": "model",
                            "family": fam,
                            "variant": v,
                            "pass": pass_,
                            "device": suite["device"],
                            "batch": md["batch"],
                            "threads": suite["threads"],
                            "seed": suite["seed"],
                            "image_size": s,
                            **_impl.core_param(_model_impls(fam, v), suite["device"]),
                        },
                        settings,
                    )  # fmt: skip
                    for v in md[fam]["variants"]
                ]
                if md["timing"]:  # the variants of one size are timed interleaved
                    groups.append(Group(cells, execute, label=f"model {fam} {pass_} {s}px", exclusive=True,
                                        threads=suite["threads"]))  # fmt: skip
                else:  # count-only cells need no interleaving: one group (and one record) each
                    groups += [Group([c], execute, label=f"model {c['variant']} {s}px", exclusive=md["timing"],
                                     threads=suite["threads"]) for c in cells]  # fmt: skip
    return groups
