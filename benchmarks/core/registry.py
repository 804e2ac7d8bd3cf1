"""The study registry: what the core knows of a study is the one :class:`Study` record it registers.

A study (``benchmarks/studies/<name>/``, or a user's own module) describes itself once: its name
(the suite section it reads and the ``kind`` of the rows it writes), how to validate that section,
how to plan its cells, how to check its data, what to print after a run, its README block, its
report parts and its metrics. The command line, the suite loader, the store, the reproduction
check and the report loop over :func:`studies`; none of them names a study. This is the way timm
maps a model name to its builder and Ultralytics a task to its trainer and validator.

Registration is explicit: ``benchmarks.studies`` imports the project's studies (each calls
:func:`register` in its package ``__init__``); code outside the package registers its own with the
same call. Nothing in the core imports a study.

>>> from benchmarks.core.registry import Study, register, get
>>> toy = register(Study(name="toy_doc", parse=dict, plan=lambda suite_name, suite, parts: []))
>>> get("toy_doc") is toy
True
>>> unregister("toy_doc")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.core import metrics as _metrics


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: its files (PDF first), caption, and where it sits.

    ``wide``: spans the text width (``figure*``); ``readme_alt``: shown in the README's report block
    with this alt text (None: report only).
    """

    name: str
    paths: list
    caption: str
    wide: bool = False
    readme_alt: str | None = None


@dataclass
class ReportPart:
    """What one study gives the report: tables, figures, claims of the ledger and the names of the
    rows it lacks. ``order`` places the tables, figures and missing lines among the other studies'
    parts; ``ledger_order`` places the claims among the ledger's rows. ``rows``: the rows the part
    read (for the ledger's caption, which names every run)."""

    order: float
    ledger_order: float
    tables: list = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rows: Any = None


@dataclass(frozen=True)
class ReadmeContext:
    """What ``derive`` gives a study's README hook: the suite, the command that writes the block,
    the runs selected for the study's kind and their rows, the derive options, and the one line per
    earlier run that the latest run reproduced."""

    suite_name: str
    suite: dict[str, Any]
    command: str
    runs: list
    rows: Any
    results_dir: str
    options: dict[str, Any]
    reproduction: list[str]


@dataclass(frozen=True)
class Study:
    """One study's record.

    - ``name``: the suite section (``suite[name]``), the ``kind`` of its rows and a ``--part`` choice.
    - ``parse(section) -> dict``: validate the section (ValueError with one line naming the key) and
      return it as the plain dict the run's configuration stores.
    - ``plan(suite_name, suite, parts) -> [Group]``: the cells of the suite's section; ``parts`` is a
      subset of ``parts`` (the sub-sections ``--part`` may name, e.g. complexity's ``operator``).
    - ``check_data(section)``: raise :class:`benchmarks.core.schema.DataError` (one line) when the
      section's data cannot be had, without downloading or generating anything.
    - ``gpus(section) -> int``: GPUs one cell of the section uses on one node (the executor check).
    - ``run_summary(rows, section, title) -> str``: Markdown printed after ``run``.
    - ``readme(ctx) -> str | None``: the body of the README block ``<name>:<suite>`` written by
      ``derive`` (:class:`ReadmeContext`: by default the latest complete run of each machine that
      holds rows of the study's kind); None leaves the block as it is.
    - ``report(ctx) -> [ReportPart]``: the study's tables, figures and claims.
    - ``metrics``: the metrics its rows carry (registered with the study).
    - ``order``: where the study comes in plans and README blocks.
    - ``null_when_absent``: write ``name: null`` into the configuration of a suite without the
      section. The three studies that predate the registry did, and the published runs'
      configuration hashes keep it; a new study leaves other suites' configurations unchanged.
    """

    name: str
    parse: Callable[[Any], dict]
    plan: Callable[[str, dict, tuple[str, ...]], list]
    parts: tuple[str, ...] = ()
    check_data: Callable[[dict], None] | None = None
    gpus: Callable[[dict], int] | None = None
    run_summary: Callable[[Any, dict, str], str | None] | None = None
    readme: Callable[[ReadmeContext], str | None] | None = None
    report: Callable[[Any], list[ReportPart]] | None = None
    metrics: tuple[_metrics.Metric, ...] = ()
    order: float = 100.0
    null_when_absent: bool = False
    module: str = ""  # the module that registered it (imported again by worker processes)


_STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add ``study`` (and its metrics) to the registry; registering an identical record again is a
    no-op, another record under a taken name is an error."""
    if not study.name.isidentifier():
        raise ValueError(f"study name {study.name!r} must be an identifier (it is a suite section)")
    if not study.module:
        import inspect

        frame = inspect.currentframe()
        caller = frame.f_back.f_globals.get("__name__", "") if frame and frame.f_back else ""
        study = _replace(study, module=caller)
    old = _STUDIES.get(study.name)
    if old is not None and old != study:
        raise ValueError(f"a different study is already registered as {study.name!r} (from {old.module})")
    for m in study.metrics:
        _metrics.register_metric(m)
    _STUDIES[study.name] = study
    return study


def _replace(study: Study, **kw) -> Study:
    import dataclasses

    return dataclasses.replace(study, **kw)


def unregister(name: str) -> None:
    """Remove a study (tests that register a toy study clean up with this)."""
    _STUDIES.pop(name, None)


def studies() -> list[Study]:
    """The registered studies in their ``order`` (then by name)."""
    return sorted(_STUDIES.values(), key=lambda s: (s.order, s.name))


def get(name: str) -> Study:
    """The study registered as ``name`` (ValueError naming the registered ones)."""
    try:
        return _STUDIES[name]
    except KeyError:
        raise ValueError(
            f"no study named {name!r} is registered (registered: {sorted(_STUDIES)}); "
            "import benchmarks.studies or register your own with benchmarks.core.registry.register"
        ) from None


def kinds() -> tuple[str, ...]:
    """The row kinds the store accepts: one per registered study."""
    return tuple(s.name for s in studies())


def part_choices() -> list[str]:
    """What ``run --part`` may name: every study, every sub-section a study declares, and ``all``."""
    out = []
    for s in studies():
        out += [s.name, *s.parts]
    return [*out, "all"]


def plan(suite_name: str, suite: dict[str, Any], part: str = "all") -> list:
    """Every group of the suite's sections that ``part`` selects, study by study in registry order."""
    groups: list = []
    for s in studies():
        if suite.get(s.name) is None:
            continue
        if part == "all" or part == s.name:
            groups += s.plan(suite_name, suite, s.parts)
        elif part in s.parts:
            groups += s.plan(suite_name, suite, (part,))
    return groups


def owner(part: str) -> Study | None:
    """The study that ``part`` (a study's name or one of its sub-sections) belongs to."""
    for s in studies():
        if part == s.name or part in s.parts:
            return s
    return None


def modules() -> tuple[str, ...]:
    """The modules that registered the studies (what a worker process imports to see the same registry)."""
    return tuple(dict.fromkeys(s.module for s in studies() if s.module))


def load(mods: tuple[str, ...]) -> None:
    """Import ``mods`` (from :func:`modules` of another process): their studies register themselves."""
    for mod in mods:
        importlib.import_module(mod)


@dataclass(frozen=True)
class Planner:
    """A picklable plan of a suite for ``part``: a worker process (submitit, a process pool) imports
    the modules that registered the studies in the parent, then plans again."""

    part: str = "all"
    modules: tuple[str, ...] = ()

    @classmethod
    def current(cls, part: str = "all") -> Planner:
        return cls(part, modules())

    def __call__(self, suite_name: str, suite: dict[str, Any]) -> list:
        load(self.modules)
        return plan(suite_name, suite, self.part)
