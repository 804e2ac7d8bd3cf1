"""The result store: row format, atomic appends, torn lines, resume, provenance, suites."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from benchmarks.store import ROW_KEYS, ResultStore, error_row, make_row, provenance, validate_row
from benchmarks.suites import load_suite, validate_suite


def _row(cell="c1", metric="latency_ms", value=1.5, **kw):
    return make_row("t", "complexity", cell, "sdpa", metric=metric, value=value, unit="ms", prov={}, **kw)


def test_rows_round_trip_in_order_with_extra_keys(tmp_path):
    store = ResultStore(tmp_path / "t.jsonl", suite="t")
    assert store.rows() == []
    store.append([_row("a", tokens=256, pass_="fwd", iqr_ms=0.1), _row("b", value=2.0)])
    store.append([_row("c", value=3.0)])
    rows = store.rows()
    assert [r["cell"] for r in rows] == ["a", "b", "c"]
    assert list(rows[0])[: len(ROW_KEYS)] == list(ROW_KEYS)
    assert rows[0]["tokens"] == 256 and rows[0]["pass"] == "fwd" and rows[0]["iqr_ms"] == 0.1
    assert store.done_cells() == {"a", "b", "c"}
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["suite"] == "t" for line in lines)


def test_provenance_names_code_machine_and_settings():
    prov = provenance("cpu")
    for key in ("git", "dirty", "packages", "torch", "cuda", "device", "device_name", "threads"):
        assert key in prov, key
    assert prov["deterministic"] in (True, False)
    assert prov["git"] is None or len(prov["git"]) == 40
    assert prov["packages"]["torch"] is not None
    assert prov["timestamp"].endswith("+00:00")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"kind": "training"}, "kind"),
        ({"pass": "backward"}, "pass"),
        ({"value": float("nan")}, "finite"),
        ({"value": "1.0"}, "finite"),
        ({"tokens": 1.5}, "tokens"),
        ({"cell": ""}, "cell"),
        ({"error": "boom"}, "value null"),
    ],
)
def test_malformed_rows_are_rejected_with_the_key_named(change, match):
    row = _row()
    row.update(change)
    with pytest.raises(ValueError, match=match):
        validate_row(row)


def test_missing_keys_and_extra_key_collisions_are_rejected():
    row = _row()
    del row["unit"]
    with pytest.raises(ValueError, match="missing keys"):
        validate_row(row)
    with pytest.raises(ValueError, match="collide"):
        make_row("t", "complexity", "c", "v", metric="m", value=1.0, unit="", prov={}, provenance={})


def test_error_rows_have_null_value_and_a_message(tmp_path):
    row = error_row("t", "complexity", "c9", "softmax", "out of memory: 40 GiB", prov={}, tokens=65536)
    assert row["value"] is None and row["error"].startswith("out of memory")
    with pytest.raises(ValueError, match="non-empty"):
        error_row("t", "complexity", "c9", "softmax", "", prov={})
    store = ResultStore(tmp_path / "t.jsonl", suite="t")
    store.append([row])
    assert store.done_cells() == {"c9"}


def test_a_bad_row_in_a_batch_writes_nothing(tmp_path):
    store = ResultStore(tmp_path / "t.jsonl", suite="t")
    bad = _row("b")
    bad["value"] = float("inf")
    with pytest.raises(ValueError):
        store.append([_row("a"), bad])
    assert not (tmp_path / "t.jsonl").exists() or store.rows() == []
    with pytest.raises(ValueError, match="suite"):
        store.append([make_row("other", "complexity", "c", "v", metric="m", value=1.0, unit="", prov={})])


def test_torn_last_line_is_skipped_and_fenced_off(tmp_path):
    path = tmp_path / "t.jsonl"
    store = ResultStore(path, suite="t")
    store.append([_row("a")])
    with open(path, "a") as fh:  # a crash in the middle of a write
        fh.write(json.dumps(_row("torn"))[:40])
    with pytest.warns(UserWarning, match="malformed"):
        assert [r["cell"] for r in store.rows()] == ["a"]
    store.append([_row("b")])
    with pytest.warns(UserWarning, match="malformed"):
        assert [r["cell"] for r in store.rows()] == ["a", "b"]


def _append_many(path, worker, n):
    store = ResultStore(path, suite="t")
    for i in range(n):
        store.append([_row(f"w{worker}-{i}", value=float(i)), _row(f"w{worker}-{i}", metric="x", value=1.0)])


def test_concurrent_appends_from_processes_never_interleave(tmp_path):
    path = tmp_path / "t.jsonl"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 4 * 40 * 2
    rows = [json.loads(line) for line in lines]  # every line is a whole row
    assert len({r["cell"] for r in rows}) == 160


def test_load_gives_a_dataframe_with_flattened_provenance(tmp_path):
    store = ResultStore.for_suite("t", tmp_path, tag="box1")
    assert store.path.name == "t-box1.jsonl"
    assert store.load().empty
    rows = [make_row("t", "complexity", "c", "sdpa", metric="m", value=2.0, unit="ms", prov=provenance())]
    store.append(rows)
    df = store.load()
    assert len(df) == 1 and df.loc[0, "value"] == 2.0
    assert "prov.git" in df.columns and "prov.threads" in df.columns


def test_embedded_suites_load_with_defaults():
    cpu = load_suite("cpu")
    assert cpu["name"] == "cpu" and cpu["device"] == "cpu" and cpu["threads"] == 1
    op = cpu["complexity"]["operator"]
    assert op["tokens"] == sorted(op["tokens"]) and 256 in op["tokens"] and op["tokens"][-1] >= 16384
    assert set(op["passes"]) == {"fwd", "fwd+bwd"}
    gpu = load_suite("gpu")
    assert gpu["device"] == "cuda" and gpu["complexity"]["operator"]["tokens"][-1] == 65536


@pytest.mark.parametrize(
    "data, match",
    [
        ({"device": "cpu"}, "missing required key 'name'"),
        ({"name": "x", "thread": 1}, r"unknown key\(s\) \['thread'\]"),
        ({"name": "x", "threads": "two"}, "threads: expected int"),
        ({"name": "x", "device": "tpu"}, "device"),
        ({"name": "x", "complexity": {"operator": {"tokens": [0, 4]}}}, "positive integers"),
        ({"name": "x", "complexity": {"operator": {"tokens": [8], "passes": ["bwd"]}}}, "passes"),
        ({"name": "x", "complexity": {"operator": {"tokens": [8], "dim": 10, "heads": 3}}}, "divisible"),
        (
            {"name": "x", "complexity": {"operator": {"tokens": [8], "variants": ["flash"]}}},
            "unknown variant",
        ),
        ({"name": "x", "complexity": {"model": {"yolo": {"variants": ["yolo11n"]}}}}, "image_sizes"),
        ({"name": "x", "complexity": {"sweep": {}}}, "unknown key"),
    ],
)
def test_bad_suites_raise_one_clear_error(data, match):
    with pytest.raises(ValueError, match=match):
        validate_suite(data)


def test_unknown_suite_name_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="unknown suite 'nope'.*cpu"):
        load_suite("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_suite(str(bad))


def test_fresh_sets_rows_aside_without_ever_replacing_earlier_ones(tmp_path):
    from benchmarks.__main__ import _set_aside

    path = tmp_path / "cpu.jsonl"
    for content in ("first\n", "second\n"):  # twice within one second: same time stamp
        path.write_text(content)
        _set_aside(path)
    assert not path.exists()
    kept = sorted(p.read_text() for p in tmp_path.glob("cpu.jsonl.*.prev"))
    assert kept == ["first\n", "second\n"]
