"""YOLO11 variants: registration, every variant x scale, state dicts, the TSSA inside the detector."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tssa.offline
import tssa.ultralytics as tu
from tssa.ops import tssa as tssa_op
from tssa.ultralytics.flops import count_flops, detector_gflops

ROOT = Path(__file__).resolve().parent.parent

# after tssa.ultralytics, which applies the offline settings before ultralytics is first imported
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn.modules import C2PSA  # noqa: E402

LARGE = {"l", "x"}  # seconds per forward at 640 on CPU

# variant -> expected class at layer 10 and at the extra head layers 23-25 (None: no extra layers)
LAYOUT = {
    "yolo11": (C2PSA, None),
    "yolo11-tssa": (tu.C2TSSA, None),
    "yolo11-noattn": (tu.C2NoAttn, None),
    "yolo11-softmax-p345": (C2PSA, C2PSA),
    "yolo11-tssa-p345": (tu.C2TSSA, tu.C2TSSA),
}


def _build(variant: str, scale: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return YOLO(tu.model_yaml(variant, scale), **kw)


def _anchors(imgsz: int) -> int:
    return sum((imgsz // s) ** 2 for s in (8, 16, 32))


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_plain_import_stays_light():
    r = _run(
        "import sys, tssa, tssa.offline\n"
        "heavy = [m for m in ('ultralytics', 'timm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')"
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_configure_offline_before_ultralytics(tmp_path):
    cfg = tmp_path / "cfg"
    r = _run(
        "import os\n"
        "from tssa.offline import configure_offline\n"
        f"root = configure_offline({str(cfg)!r})\n"
        "assert os.environ['YOLO_OFFLINE'] == 'true' and os.environ['YOLO_AUTOINSTALL'] == 'false'\n"
        "import ultralytics.utils as u\n"
        "assert u.ONLINE is False and u.AUTOINSTALL is False, (u.ONLINE, u.AUTOINSTALL)\n"
        f"assert str(u.USER_CONFIG_DIR).startswith({str(cfg)!r}), u.USER_CONFIG_DIR\n"
        "from ultralytics.utils.checks import check_font\n"
        "assert str(check_font('Arial.ttf')).startswith(str(root)), check_font('Arial.ttf')\n"
        "print('ok')"
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
    assert (cfg / "Ultralytics" / "Arial.ttf").stat().st_size > 0


def _bare_env(home) -> dict:
    """The environment without any offline setting, with ``home`` as the user's home and config dir."""
    drop = ("YOLO_", "TSSA_", "HF_HUB_OFFLINE", "XDG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    (Path(home) / ".config").mkdir(exist_ok=True)  # some releases fall back to /tmp when it is missing
    return dict(env, HOME=str(home))


_IMPORT_REPORT = (
    "import json, os\n"
    "import tssa.ultralytics as tu\n"
    "import ultralytics.nn.tasks as t\n"
    "import ultralytics.utils as u\n"
    "keys = ('YOLO_OFFLINE', 'YOLO_AUTOINSTALL', 'YOLO_CONFIG_DIR', 'HF_HUB_OFFLINE')\n"
    "print(json.dumps({'env': {k: os.environ.get(k) for k in keys}, 'online': u.ONLINE,\n"
    "    'autoinstall': u.AUTOINSTALL, 'config': str(u.USER_CONFIG_DIR),\n"
    "    'fonts': sorted(p.name for p in u.USER_CONFIG_DIR.glob('Arial*')),\n"
    "    'registered': t.C2TSSA is tu.C2TSSA}))\n"
)


def test_import_changes_only_the_offline_settings(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", _IMPORT_REPORT],
        capture_output=True,
        text=True,
        env=_bare_env(tmp_path),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["env"] == {
        "YOLO_OFFLINE": "true",
        "YOLO_AUTOINSTALL": "false",
        "YOLO_CONFIG_DIR": None,  # Ultralytics keeps the user's config dir
        "HF_HUB_OFFLINE": None,  # not needed by Ultralytics: left alone
    }
    assert out["online"] is False and out["autoinstall"] is False and out["registered"] is True
    assert out["config"] == str(tmp_path / ".config" / "Ultralytics")
    assert out["fonts"] == sorted(tssa.offline.FONT_NAMES)


def test_import_opt_out_leaves_the_environment_alone(tmp_path):
    env = dict(_bare_env(tmp_path), TSSA_OFFLINE="0")
    r = subprocess.run(
        [sys.executable, "-c", _IMPORT_REPORT], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["env"] == dict.fromkeys(
        ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "HF_HUB_OFFLINE")
    )
    assert out["fonts"] == [] and out["registered"] is True


def test_train_defaults_name_no_device():
    assert "device" not in tu.TRAIN_DEFAULTS
    assert tu.TRAIN_DEFAULTS["amp"] is False  # the CUDA AMP check downloads weights


def test_too_old_ultralytics_is_refused_with_the_fix():
    with pytest.raises(ImportError, match=r"ultralytics>=8\.4\.113, found 8\.4\.112"):
        tu._check_version("8.4.112")
    tu._check_version("8.4.113")
    tu._check_version("8.10.0")


def test_configure_offline_rejects_a_file(tmp_path):
    from tssa.offline import configure_offline

    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        configure_offline(f)


def test_model_yaml_names_and_errors():
    assert tu.model_yaml("yolo11-tssa", "n") == "yolo11n-tssa.yaml"
    assert tu.model_yaml("yolo11", "x") == "yolo11x.yaml"
    with pytest.raises(ValueError, match="unknown variant"):
        tu.model_yaml("yolo11-foo", "n")
    with pytest.raises(ValueError, match="unknown scale"):
        tu.model_yaml("yolo11-tssa", "q")
    with pytest.raises(FileNotFoundError):
        YOLO("yolo11n-nosuchvariant.yaml")


def test_stock_yaml_untouched():
    import ultralytics

    stock = Path(ultralytics.__file__).parent / "cfg" / "models" / "11" / "yolo11.yaml"
    model = _build("yolo11", "n")
    assert Path(model.model.yaml["yaml_file"]).name == "yolo11n.yaml"
    assert not any("C2TSSA" in line or "C2NoAttn" in line for line in stock.read_text().splitlines())
    assert isinstance(model.model.model[10], C2PSA)


@pytest.mark.parametrize(
    "scale", [pytest.param(s, marks=pytest.mark.slow) if s in LARGE else s for s in tu.SCALES]
)
@pytest.mark.parametrize("variant", tu.VARIANTS)
def test_variant_builds_and_runs(variant, scale):
    model = _build(variant, scale).model.eval()
    p5_cls, head_cls = LAYOUT[variant]
    layers = model.model
    assert type(layers[10]) is p5_cls
    if head_cls is None:
        assert len(layers) == 24
    else:
        assert len(layers) == 27 and all(type(layers[i]) is head_cls for i in (23, 24, 25))
        assert [layers[i].f for i in (23, 24, 25)] == [16, 19, 22] and layers[26].f == [23, 24, 25]
    if p5_cls is not C2PSA:  # no stock softmax attention left anywhere
        assert not any(type(m).__name__ == "Attention" for m in model.modules())
    with torch.no_grad():
        for imgsz in (320, 640):
            y = model(torch.zeros(1, 3, imgsz, imgsz))[0]
            assert y.shape == (1, 4 + 80, _anchors(imgsz)), (imgsz, y.shape)
            assert torch.isfinite(y).all()


def test_layer_table_and_info_show_real_names():
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("ultralytics")
    logger.addHandler(handler)
    try:
        model = _build("yolo11-tssa-p345", "n", verbose=True)
        model.info()
    finally:
        logger.removeHandler(handler)
    rows = {int(m[:3]): m for m in records if m[:3].strip().isdigit()}
    for i in (10, 23, 24, 25):
        assert "tssa.ultralytics.modules.C2TSSA" in rows[i], rows[i]
        assert f"{model.model.model[i].np:10.0f}" in rows[i]
    assert not any("C2PSA" in m for m in records)
    assert model.model.model[10].type == "tssa.ultralytics.modules.C2TSSA"
    total = sum(p.numel() for p in model.model.parameters())
    assert any(f"{total:,} parameters" in m for m in records)


def _attn_free(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not (k.startswith("model.10.m.") and ".attn." in k)}


@pytest.mark.parametrize(
    "variant, scale", [("yolo11-tssa", "n"), ("yolo11-tssa", "l"), ("yolo11-noattn", "n")]
)  # l: depth 1.0, two PSA blocks
def test_state_dict_equals_stock_outside_the_token_mixer(variant, scale):
    stock = _build("yolo11", scale, seed=3).model.state_dict()
    ours = _build(variant, scale, seed=3).model.state_dict()
    assert _attn_free(stock).keys() == _attn_free(ours).keys()
    assert {k for k in stock if k not in _attn_free(stock)} == {
        k for k in stock if k.startswith("model.10.m.") and ".attn." in k
    }
    n_blocks = 2 if scale == "l" else 1
    replaced = {k for k in ours if k not in _attn_free(ours)}
    if variant == "yolo11-tssa":
        expect = {
            f"model.10.m.{b}.attn.{p}"
            for b in range(n_blocks)
            for p in ("qkv.weight", "temp", "to_out.0.weight", "to_out.0.bias")
        }
        assert replaced == expect
    else:
        assert replaced == set()
    for k, v in _attn_free(stock).items():  # same shapes, and the same initial values under the same seed
        assert ours[k].shape == v.shape, k
        assert torch.equal(ours[k], v), k


def test_tssa_inside_detector_equals_operator(imgsz=640):
    model = _build("yolo11-tssa", "s").model.eval()
    block = model.model[10]
    attn = block.m[0].attn
    c = block.c
    assert attn.num_heads == max(c // 64, 1) == 4  # the heads C2PSA uses at scale s (c = 256)
    seen = {}
    hooks = [
        attn.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach().clone())),
        attn.qkv.register_forward_hook(lambda m, a, out: seen.__setitem__("w", out.detach().clone())),
        attn.to_out.register_forward_pre_hook(lambda m, a: seen.__setitem__("y", a[0].detach().clone())),
    ]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model(torch.rand(1, 3, imgsz, imgsz, generator=g))
    for h in hooks:
        h.remove()
    b, _, hh, ww = seen["x"].shape
    n = (imgsz // 32) ** 2
    assert (hh * ww) == n
    tokens = seen["x"].flatten(2).transpose(1, 2)  # (B, N, C): the flattened P5 positions
    w = torch.nn.functional.linear(tokens, attn.qkv.weight, attn.qkv.bias)
    torch.testing.assert_close(seen["w"], w)
    w = w.view(b, n, attn.num_heads, c // attn.num_heads).transpose(1, 2)  # (B, H, N, D)
    ref = tssa_op(w.double(), attn.temp.view(-1).double(), impl="naive")  # (B, H, N, D)
    ref = ref.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
    torch.testing.assert_close(seen["y"].double(), ref, rtol=1e-5, atol=1e-6)


def test_flops_count_attention_at_the_true_size():
    x1, x2 = torch.zeros(1, 128, 20, 20), torch.zeros(1, 128, 40, 40)  # 400 and 1600 tokens
    torch.manual_seed(0)
    softmax, ours, none = C2PSA(128, 128), tu.C2TSSA(128, 128), tu.C2NoAttn(128, 128)
    # TSSA and the feed-forward are linear in the number of tokens
    assert count_flops(ours, x2) == 4 * count_flops(ours, x1)
    assert count_flops(none, x2) == 4 * count_flops(none, x1)
    # softmax attention (c = 64: 1 head, key dim 32, head dim 64) adds q^T k and v attn^T: N x N products
    quadratic = lambda n: 2 * n * n * (32 + 64)  # noqa: E731
    linear = lambda x: count_flops(softmax, x) - quadratic(x.shape[2] * x.shape[3])  # noqa: E731
    assert linear(x2) == 4 * linear(x1)
    assert count_flops(softmax, x2) > 4 * count_flops(softmax, x1)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.zeros(1, 3, 16, 16)) == 2 * 8 * 3 * 9 * 16 * 16
    with pytest.raises(ValueError, match="multiple of 32"):
        detector_gflops(conv, 100)


def test_table_script_writes_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n<!-- yolo-table:begin -->\nold\n<!-- yolo-table:end -->\n\ntail\n")
    suite = tmp_path / "table.yaml"
    suite.write_text(
        "name: table-test\nthreads: 1\ncomplexity:\n  model:\n    passes: [fwd]\n    timing: false\n"
        "    profile_max_size: 0\n    yolo: {variants: [yolo11n, yolo11n-tssa], image_sizes: [640]}\n"
    )
    cmd = [sys.executable, "-m", "benchmarks.studies.complexity.yolo_table", "--suite", str(suite), "--results-dir",
           str(tmp_path / "r")]  # fmt: skip
    r = subprocess.run([*cmd, "--write-readme", str(readme)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    text = readme.read_text()
    assert "old" not in text and text.startswith("# t\n") and text.endswith("\n\ntail\n")
    assert "| `yolo11n-tssa` | 2,605,650 |" in text
    assert "| `yolo11n` | 2,624,080 |" in text
    assert "public C2PSA-TSSA forks: 2.61M params / 6.6 GFLOPs at 640" in text
    # "reproduced" follows the counted GFLOPs: the forks' 6.6 is Ultralytics' estimate, the count is 6.49
    assert "`yolo11n-tssa` has 2.61M / 6.49 GFLOPs counted (6.5 at one decimal)" in text
    assert ": not reproduced (counted 6.5 vs 6.6; Ultralytics' estimate" in text
    assert "`yolo11n` has 2.62M / 6.57 GFLOPs counted (6.6 at one decimal)" in text
    bad = tmp_path / "BAD.md"
    bad.write_text("no markers\n")
    r = subprocess.run([*cmd, "--write-readme", str(bad)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "yolo-table:begin" in r.stderr
    assert bad.read_text() == "no markers\n"
