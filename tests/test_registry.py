"""The harness's shape: the core knows no study, a study is one record, and the move kept every identity.

- A toy study registered from this file runs through ``run``, ``derive`` and ``report`` with no
  file of ``benchmarks/core`` or ``benchmarks/report`` changed for it.
- Importing every module of the core and the report imports no study.
- The published runs' configuration hashes and cell ids are what the current code computes.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import benchmarks.core
import benchmarks.report
from benchmarks.core import registry, stats
from benchmarks.core.cells import Cell
from benchmarks.core.metrics import Metric
from benchmarks.core.runner import Group, Outcome
from benchmarks.core.schema import Section, validate
from benchmarks.core.store import Run, config_hash
from benchmarks.core.suites import SuiteError, validate_suite
from benchmarks.report.render import Col, Table, to_markdown

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------- a toy study
class ToySection(Section):
    arms: list[str]
    seeds: list[int]
    offset: float = 0.0


def _toy_parse(section) -> dict:
    return validate(ToySection, section, "toy").model_dump()


def _toy_execute(cells, ctx):
    out = {}
    for c in cells:  # a deterministic "score": arm b beats arm a by 0.1 at every seed
        score = ctx.suite["toy"]["offset"] + 0.5 + 0.01 * c["seed"] + (0.1 if c["variant"] == "b" else 0.0)
        out[c.id] = Outcome(rows=[ctx.row(c, "toy_score", score)])
    return out


def _toy_plan(suite_name, suite, parts):
    sec = suite["toy"]
    cells = [Cell.make("toy", {"variant": a, "seed": s}, {"offset": sec["offset"]}) for s in sec["seeds"]
             for a in sec["arms"]]  # fmt: skip
    return [Group([c], _toy_execute, label=c.id) for c in cells]


def _toy_summary(rows, section):
    claims = [{"name": "b beats a", "arm": "b", "metric": "toy_score"}]
    return stats.summarise(stats.long_rows(rows, "toy"), "a", family=["toy_score"], claims=claims, rope=0.01)


def _toy_table(s) -> Table:
    d = s["describe"]
    cells = d.rename(columns={"arm": "row", "metric": "col", "ci_low": "lo", "ci_high": "hi"})
    return Table(name="toy_scores", caption="Toy scores per arm", label="tab:toy", stub="arm",
                 rows=sorted(set(d["arm"])), cols=[Col("toy_score", "score", "score", "pm", 3)], cells=cells)  # fmt: skip


def _toy_readme(ctx):
    return f"Written by `{ctx.command}`.\n\n" + to_markdown(
        _toy_table(_toy_summary(ctx.rows, ctx.suite["toy"]))
    )


def _toy_report(ctx):
    rows = ctx.rows(None, "toy")
    if rows.empty:
        return [registry.ReportPart(order=9, ledger_order=9, missing=["toy: no rows"])]
    section = ctx.runs(None, "toy")[-1].record["config"]["toy"]
    s = _toy_summary(rows, section)
    v = s["verdicts"].iloc[0]
    claim = dict(claim="Toy: b beats a", source="this test", measured=f"n = {v['n']}",
                 interval=f"{v['mean_diff']:+.3f}", verdict=v["verdict"], why="paired t, Holm")  # fmt: skip
    return [registry.ReportPart(order=9, ledger_order=9, tables=[_toy_table(s)], claims=[claim], rows=rows)]


TOY = registry.Study(
    name="toy",
    parse=_toy_parse,
    plan=_toy_plan,
    run_summary=lambda rows, section, title: f"**{title}**: {len(rows)} rows",
    readme=_toy_readme,
    report=_toy_report,
    metrics=(Metric("toy_score", "1", True, "toy score", "toy score", 3),),
    order=50,
)


@pytest.fixture
def toy():
    study = registry.register(TOY)
    yield study
    registry.unregister("toy")


def test_a_toy_study_runs_through_run_derive_and_report(toy, tmp_path, capsys):
    from benchmarks.__main__ import main

    suite = tmp_path / "toy.yaml"
    suite.write_text("name: toysuite\ntoy: {arms: [a, b], seeds: [0, 1, 2]}\n")
    res = tmp_path / "results"
    assert main(["run", "--suite", str(suite), "--results-dir", str(res), "--part", "toy"]) == 0
    assert "Toy study, suite toysuite" in capsys.readouterr().out
    (run_json,) = (res / "local" / "toysuite").glob("*/run.json")
    run = Run(run_json.parent)
    rows = run.rows()
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"toy"}
    assert "toy" in run.record["config"] and "detection" in run.record["config"]  # the older studies' nulls

    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- answer:begin -->\n<!-- answer:end -->\n<!-- toy:toysuite:begin -->\n"
                      "<!-- toy:toysuite:end -->\n<!-- report:begin -->\n<!-- report:end -->\n")  # fmt: skip
    assert main(["derive", "--suite", str(suite), "--results-dir", str(res), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "Written by `python -m benchmarks derive --suite toysuite`" in text
    assert "| b | 0.610 ± 0.010 |" in text  # mean of 0.60, 0.61, 0.62 with its sd

    out = tmp_path / "reports"
    assert (
        main(["report", "--results-dir", str(res), "--out", str(out), "--readme", str(readme), "--no-pdf"])
        == 0
    )
    assert (out / "tables" / "toy_scores.tex").is_file()
    assert r"\input{tables/toy_scores}" in (out / "report.tex").read_text()
    ledger = readme.read_text().split("<!-- report:begin -->")[1]
    # a paired difference of exactly +0.1 at every seed: sd 0, p 0, outside the ROPE -> supported
    assert "| Toy: b beats a | this test | n = 3 | +0.100 | supported |" in ledger


def test_a_toy_section_is_validated_by_its_study(toy):
    ok = validate_suite({"name": "t", "toy": {"arms": ["a"], "seeds": [0]}})
    assert ok["toy"] == {"arms": ["a"], "seeds": [0], "offset": 0.0}
    with pytest.raises(SuiteError, match=r"^suite <suite>: toy\.bogus: unknown key; allowed keys: \['arms'"):
        validate_suite({"name": "t", "toy": {"arms": ["a"], "seeds": [0], "bogus": 1}})


def test_a_registered_study_leaves_other_suites_identity_alone(toy):
    plain = validate_suite({"name": "t"})
    assert "toy" not in plain  # a new study adds no `toy: null` to suites without its section
    registry.unregister("toy")
    assert validate_suite({"name": "t"}) == plain
    with pytest.raises(SuiteError, match=r"suite <suite>\.toy: unknown key; allowed keys: \["):
        validate_suite({"name": "t", "toy": {}})


def test_one_data_error_for_every_study():
    from benchmarks.core.schema import DataError
    from benchmarks.studies.classification.data import digits
    from benchmarks.studies.detection.data import real

    assert digits.DataError is DataError and real.DataError is DataError


def test_registering_another_record_under_a_taken_name_fails(toy):
    assert registry.register(TOY) is not None  # the same record again: a no-op
    with pytest.raises(ValueError, match="a different study is already registered as 'toy'"):
        registry.register(registry.Study(name="toy", parse=dict, plan=lambda *a: []))


def test_the_row_kinds_and_part_choices_come_from_the_registry(toy):
    assert registry.kinds() == ("complexity", "detection", "classification", "toy")
    assert registry.part_choices() == ["complexity", "operator", "model", "detection", "classification", "toy",
                                       "all"]  # fmt: skip


def test_a_worker_plans_with_the_studies_of_its_parent(toy, tmp_path):
    planner = registry.Planner.current("toy")
    assert "tests.test_registry" in planner.modules or __name__ in planner.modules
    import pickle

    suite = validate_suite({"name": "t", "toy": {"arms": ["a"], "seeds": [0, 1]}})
    groups = pickle.loads(pickle.dumps(planner))("t", suite)
    assert [g.cells[0]["seed"] for g in groups] == [0, 1]


# ---------------------------------------------------------------------------- the core knows no study
def _modules(pkg) -> list[str]:
    return [pkg.__name__, *(m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."))]


def test_core_and_report_import_no_study():
    mods = _modules(benchmarks.core) + _modules(benchmarks.report)
    assert "benchmarks.core.registry" in mods and "benchmarks.report.claims" in mods
    code = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('benchmarks'))))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    loaded = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(mods) <= set(loaded)
    assert [m for m in loaded if m.startswith("benchmarks.studies")] == []


# ------------------------------------------------------------------------ identities of published runs
PUBLISHED = sorted((ROOT / "results").glob("*/*/run.json"))


def _as_recorded(run, monkeypatch):
    """Plan as the code that recorded ``run`` did: a run whose cells name no ``tssa_core`` predates
    that parameter, and its ids are those of a plan without it."""
    from benchmarks.core import impl

    if not any("/tssa_core=" in c for c in run.status()):
        monkeypatch.setattr(impl, "core_param", lambda *a, **k: {})


@pytest.mark.parametrize("record", PUBLISHED, ids=[p.parent.name for p in PUBLISHED])
def test_published_runs_keep_their_configuration_hash_and_cell_ids(record, monkeypatch):
    """A published run's configuration hash is what the code computes from its configuration, and
    its complexity cells keep their ids. Detection and classification training cells changed id once,
    when the latency and throughput they timed moved into cells of their own (timed alone, while
    training cells run in parallel): their ids are not in today's plan. Cells that run TSSA through
    ``auto`` name the core it resolved to since (``tssa_core``); runs before that are planned without it."""
    run = Run(record.parent)
    _as_recorded(run, monkeypatch)
    rec = run.record
    suite = validate_suite(rec["config"], source=rec["suite"])
    assert (
        json.loads(json.dumps(suite, default=str)) == rec["config"]
    )  # as run.json stores it (tuples as lists)
    assert config_hash(suite) == rec["config_hash"]
    planned = {c.id for g in registry.plan(rec["suite"], suite, "all") for c in g.cells}
    logged = {c for c in run.status() if c.startswith("complexity/")}
    assert logged <= planned  # a run of one part (--part) logs a subset of the plan
    rows = pd.DataFrame(run.rows())
    assert set(rows["cell"][rows["kind"] == "complexity"]) <= planned


def test_a_full_published_run_logged_the_current_complexity_plan(monkeypatch):
    full = [p for p in PUBLISHED if p.parent.name == "20261129T015234Z-c942d8-d92efb40"]
    assert full, "the cpu run the report reads is published"
    run = Run(full[0].parent)
    _as_recorded(run, monkeypatch)
    suite = validate_suite(run.record["config"])
    planned = {c.id for g in registry.plan("cpu", suite, "complexity") for c in g.cells}
    logged = {c for c in run.status() if c.startswith("complexity/")}
    assert len(logged) == 208 and logged <= planned
    # what the run could not have measured: the compiled core (tssa:fused) registered since, where it builds
    assert {c.split("/")[2] for c in planned - logged} <= {"variant=tssa:fused"}


# the run identities (configuration hashes without executor and jobs) of the embedded suites, as the code
# before the core/studies layout computed them; cpu since its detection recipe has 7 seeds, 1600 val images,
# 6 fine-tuning epochs and COCO's 100 detections per image (8d9fa9287055 before, the operator sweep to
# 131072 tokens; 93e5dc41a1fb before that: the published v2 runs)
EMBEDDED_HASHES = {"cpu": "93e26119cd40", "smoke": "b5a149f95c55", "gpu": "4251441257f5", "paper": "576dcdc192b9",
                   "yolo-table": "c517b46e977a"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EMBEDDED_HASHES))
def test_embedded_suites_keep_their_configuration_hash(name):
    from benchmarks.core.scaleout import split_executor
    from benchmarks.core.suites import load_suite

    # a run's identity is the suite without where and how many at once its cells run (executor, jobs)
    assert config_hash(split_executor(load_suite(name))[0]) == EMBEDDED_HASHES[name]
