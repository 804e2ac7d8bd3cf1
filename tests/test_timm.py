"""ToST in timm: registration, parameter counts against the official layout, forward/backward,
mixers equal to their references, checkpoints (own and official key names), timm's model API, and the
official training recipe (weight decay, dropout, which checkpoint weights load)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")
import tssa.timm  # noqa: E402  (registers the family)
from tssa.nn import TokenStatisticsAttention  # noqa: E402
from tssa.ops import tssa  # noqa: E402
from tssa.timm import MODEL_NAMES, FourierPositionalEncoding, ToST, checkpoint_filter_fn, model_args  # noqa: E402

SIZES = {"tiny": (192, 4), "small": (384, 8), "medium": (512, 8), "large": (768, 16)}


def _expected_names():
    return sorted(
        f"tost_{mixer}{size}_{depth}_p{patch}_224"
        for mixer in ("", "softmax_", "xca_")
        for size in SIZES
        for depth in (12, 24)
        for patch in (16, 8)
    )


def _official_layout(size: str, depth: int, patch: int, mixer: str = "tssa", num_classes: int = 1000) -> dict:
    """Key -> shape of the official checkpoint layout (shared/TSSA.md), written out independently."""
    c, h = SIZES[size]
    shapes = {"cls_token": (1, 1, c)}
    widths = [3, c // 8, c // 4, c // 2, c] if patch == 16 else [3, c // 4, c // 2, c]
    for i in range(len(widths) - 1):
        cin, cout = widths[i], widths[i + 1]
        shapes[f"patch_embed.proj.{2 * i}.0.weight"] = (cout, cin, 3, 3)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"patch_embed.proj.{2 * i}.1.{name}"] = (cout,)
        shapes[f"patch_embed.proj.{2 * i}.1.num_batches_tracked"] = ()
    shapes["pos_embeder.token_projection.weight"] = (c, 64, 1, 1)
    shapes["pos_embeder.token_projection.bias"] = (c,)

    def common(prefix):
        for k in ("gamma1", "gamma2", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
            shapes[f"{prefix}.{k}"] = (c,)
        shapes.update({f"{prefix}.mlp.fc1.weight": (4 * c, c), f"{prefix}.mlp.fc1.bias": (4 * c,)})
        shapes.update({f"{prefix}.mlp.fc2.weight": (c, 4 * c), f"{prefix}.mlp.fc2.bias": (c,)})

    for i in range(depth):
        p = f"blocks.{i}"
        common(p)
        if mixer == "tssa":
            shapes.update(
                {f"{p}.attn.temp": (h, 1), f"{p}.attn.qkv.weight": (c, c), f"{p}.attn.qkv.bias": (c,)}
            )
            shapes.update({f"{p}.attn.to_out.0.weight": (c, c), f"{p}.attn.to_out.0.bias": (c,)})
        else:  # softmax and XCA: fused q/k/v and an output projection; XCA adds a per-head temperature
            shapes.update({f"{p}.attn.qkv.weight": (3 * c, c), f"{p}.attn.qkv.bias": (3 * c,)})
            shapes.update({f"{p}.attn.proj.weight": (c, c), f"{p}.attn.proj.bias": (c,)})
            if mixer == "xca":
                shapes[f"{p}.attn.temperature"] = (h, 1, 1)
    for j in range(2):
        p = f"cls_attn_blocks.{j}"
        common(p)
        shapes.update({f"{p}.attn.qkv.weight": (3 * c, c), f"{p}.attn.qkv.bias": (3 * c,)})
        shapes.update({f"{p}.attn.proj.weight": (c, c), f"{p}.attn.proj.bias": (c,)})
    shapes.update({"norm.weight": (c,), "norm.bias": (c,)})
    shapes.update({"head.weight": (num_classes, c), "head.bias": (num_classes,)})
    return shapes


def _trainable_count(shapes: dict) -> int:
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(buffers))


def _split(name):
    a = model_args(name)
    size = next(s for s, (c, _) in SIZES.items() if c == a["embed_dim"])
    return size, a["depth"], a["patch_size"], a["attn_layer"]


def test_all_names_registered_and_import_tssa_stays_timm_free():
    assert sorted(timm.list_models("tost_*")) == _expected_names() == sorted(MODEL_NAMES)
    code = "import sys, tssa; import tssa.nn, tssa.ops; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_name_is_its_own_register_model_function(monkeypatch):
    """timm's convention: ``@register_model`` over ``def <name>(...)`` that only sets arguments, and
    those arguments are the ones the name stands for."""
    import inspect
    import re

    import tssa.timm.tost as tost

    source = inspect.getsource(tost)
    calls = []
    monkeypatch.setattr(
        tost, "_create_tost", lambda variant, pretrained=False, **kw: calls.append((variant, kw))
    )
    for name in MODEL_NAMES:
        assert re.search(
            rf"^@register_model\ndef {name}\(pretrained: bool = False, \*\*kwargs\)", source, re.M
        ), name
        fn = timm.models.model_entrypoint(name)
        assert fn is getattr(tost, name) and fn.__name__ == name
        body = inspect.getsource(fn)
        assert "for " not in body and "split" not in body, body  # sets arguments, parses nothing
        fn(num_classes=7)
        assert calls[-1] == (name, dict(model_args(name), num_classes=7))


def test_no_private_timm_or_ultralytics_module_is_imported():
    """``tssa`` imports only public modules of timm and Ultralytics (no ``_private`` path component)."""
    import ast
    import importlib
    from pathlib import Path

    root = Path(importlib.import_module("tssa").__file__).parent
    private = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            for mod in mods:
                parts = mod.split(".")
                if parts[0] in ("timm", "ultralytics") and any(p.startswith("_") for p in parts[1:]):
                    private.append(f"{path.relative_to(root)}: {mod}")
    assert not private, private


def test_feature_take_indices_has_timm_semantics():
    from tssa.timm._helpers import feature_take_indices

    assert feature_take_indices(4) == ([0, 1, 2, 3], 3)
    assert feature_take_indices(4, 2) == ([2, 3], 3)
    assert feature_take_indices(4, [0, -1]) == ([0, 3], 3)
    for bad in (0, 5, [4], [-5]):
        with pytest.raises(ValueError, match="out of range"):
            feature_take_indices(4, bad)


@pytest.mark.parametrize("name", _expected_names())
def test_every_name_builds_with_the_official_layout(name):
    """Built on the meta device (no memory, no init cost): state-dict keys and shapes equal the layout."""
    size, depth, patch, mixer = _split(name)
    model = timm.create_model(name, device="meta")
    assert isinstance(model, ToST)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _official_layout(size, depth, patch, mixer)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == _trainable_count(_official_layout(size, depth, patch, mixer))
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["pool_size"] == (224 // patch,) * 2
    assert cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and cfg["std"] == timm.data.IMAGENET_DEFAULT_STD


@pytest.mark.parametrize(
    "name, expected",
    [  # hand-computed from the layout; the paper rounds ToST-T/S/M to 5.8M / 22.6M / 68.1M
        ("tost_tiny_12_p16_224", 5_769_328),
        ("tost_small_12_p16_224", 22_589_944),
        ("tost_medium_24_p16_224", 71_481_064),
        ("tost_large_24_p16_224", 160_286_920),
    ],
)
def test_parameter_counts_of_the_paper_sizes(name, expected):
    size, depth, patch, mixer = _split(name)
    model = timm.create_model(name, device="meta")
    assert sum(p.numel() for p in model.parameters()) == expected
    assert _trainable_count(_official_layout(size, depth, patch, mixer)) == expected


@pytest.mark.parametrize(
    "name", ["tost_tiny_12_p16_224", "tost_xca_tiny_12_p8_224", "tost_softmax_tiny_24_p16_224"]
)
@pytest.mark.parametrize("img_size", [(64, 64), (96, 128)], ids=["64x64", "96x128"])
def test_forward_backward_two_sizes(name, img_size):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=7, img_size=img_size, drop_path_rate=0.1).train()
    x = torch.randn(2, 3, *img_size)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)  # logits in training mode, not a tuple
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no or non-finite gradient for {missing[:5]}"
    patch = model.patch_size
    feats = model.eval().forward_features(x)
    assert feats.shape == (2, img_size[0] // patch, img_size[1] // patch, model.num_features)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)


def test_layer_scale_drop_path_and_image_size_arguments():
    m12 = timm.create_model("tost_tiny_12_p16_224", device="meta")
    m24 = timm.create_model("tost_tiny_24_p16_224", drop_path_rate=0.2)
    assert (
        m24.blocks[0].gamma1.detach().eq(1e-5).all() and m24.cls_attn_blocks[0].gamma2.detach().eq(1e-5).all()
    )
    assert m12.blocks[0].gamma1.device.type == "meta"
    assert all(b.drop_path.drop_prob == 0.2 for b in m24.blocks)
    with pytest.raises(ValueError, match="img_size .* must be divisible by patch_size 16"):
        timm.create_model("tost_tiny_12_p16_224", img_size=100)
    with pytest.raises(ValueError, match="global_pool must be one of"):
        timm.create_model("tost_tiny_12_p16_224", global_pool="max", device="meta")
    with pytest.raises(ValueError, match="unknown attn_layer 'linear'"):
        ToST(embed_dim=64, depth=1, num_heads=4, attn_layer="linear")
    with pytest.raises(ValueError, match="not a ToST model name"):
        model_args("tost_huge_12_p16_224")


def _mixer_input(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 37, model.num_features, generator=g)  # odd token count


def test_tssa_mixer_equals_operator_and_scripted_core():
    torch.manual_seed(0)
    model = timm.create_model("tost_tiny_12_p16_224").eval()
    attn = model.blocks[3].attn
    assert isinstance(attn, TokenStatisticsAttention)
    with torch.no_grad():
        attn.temp.copy_(torch.tensor([[0.5], [1.0], [2.0], [3.0]]))
    x = _mixer_input(model)
    w = F.linear(x, attn.qkv.weight, attn.qkv.bias).view(2, 37, 4, 48).transpose(1, 2)  # (B, H, N, D)
    for impl in ("naive", "lean"):
        y = tssa(w, attn.temp.view(-1), impl=impl).transpose(1, 2).reshape(2, 37, 192)  # (B, N, C)
        expected = F.linear(y, attn.to_out[0].weight, attn.to_out[0].bias)
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)
    scripted = torch.jit.script(attn)  # the TorchScript path writes the core out separately
    torch.testing.assert_close(scripted(x), attn(x), rtol=1e-5, atol=1e-6)


def test_softmax_control_equals_plain_sdpa_reference():
    torch.manual_seed(0)
    model = timm.create_model("tost_softmax_tiny_12_p16_224").eval()
    attn = model.blocks[0].attn
    x = _mixer_input(model)
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).view(2, 37, 3, 4, 48).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / 48**0.5, dim=-1)  # (B, H, N, N), materialised
    y = (weights @ v).transpose(1, 2).reshape(2, 37, 192)  # (B, N, C)
    expected = F.linear(y, attn.proj.weight, attn.proj.bias)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.jit.script(attn)(x), expected, rtol=1e-5, atol=1e-5)


def test_xca_and_class_attention_equal_their_equations():
    torch.manual_seed(0)
    model = timm.create_model("tost_xca_tiny_12_p16_224").eval()
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.5, 1.0, 2.0, 3.0]).view(4, 1, 1))
    x = _mixer_input(model)
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).view(2, 37, 3, 4, 48).permute(2, 0, 3, 4, 1)
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)  # (B, H, D, N), unit rows
    a = torch.softmax(q @ k.transpose(-2, -1) * attn.temperature, dim=-1)  # (B, H, D, D)
    y = (a @ v).permute(0, 3, 1, 2).reshape(2, 37, 192)  # (B, N, C)
    torch.testing.assert_close(attn(x), F.linear(y, attn.proj.weight, attn.proj.bias), rtol=1e-5, atol=1e-5)

    ca = model.cls_attn_blocks[0].attn
    q, k, v = F.linear(x, ca.qkv.weight, ca.qkv.bias).view(2, 37, 3, 4, 48).permute(2, 0, 3, 1, 4)
    w = torch.softmax(q[:, :, :1] @ k.transpose(-2, -1) / 48**0.5, dim=-1)  # (B, H, 1, N)
    cls = F.linear((w @ v).transpose(1, 2).reshape(2, 1, 192), ca.proj.weight, ca.proj.bias)
    out = ca(x)
    torch.testing.assert_close(out[:, :1], cls, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[:, 1:], x[:, 1:])

    blk = model.cls_attn_blocks[1]  # official residual form, tokens_norm on
    with torch.no_grad():
        blk.gamma1.fill_(0.3)
        blk.gamma2.fill_(0.7)
    y = blk.norm2(x + blk.gamma1 * blk.attn(blk.norm1(x)))
    want = torch.cat((y[:, :1] + blk.gamma2 * blk.mlp(y[:, :1]), 2 * y[:, 1:]), dim=1)
    torch.testing.assert_close(blk(x), want)


def test_fourier_encoding_equals_its_formula():
    enc = FourierPositionalEncoding(8, hidden_dim=4)
    with torch.no_grad():  # identity-like projection onto the first 8 features
        enc.token_projection.weight.copy_(torch.eye(8).view(8, 8, 1, 1))
        enc.token_projection.bias.zero_()
    got = enc(torch.zeros(1, 8, 2, 3))[0]  # (8, 2, 3)
    import math

    for i in range(2):
        for j in range(3):
            y, x = (i + 1) / (2 + 1e-6) * 2 * math.pi, (j + 1) / (3 + 1e-6) * 2 * math.pi
            f = [10000 ** (2 * (k // 2) / 4) for k in range(4)]
            want = [math.sin(y / f[0]), math.cos(y / f[1]), math.sin(y / f[2]), math.cos(y / f[3])]
            want += [math.sin(x / f[0]), math.cos(x / f[1]), math.sin(x / f[2]), math.cos(x / f[3])]
            torch.testing.assert_close(got[:, i, j], torch.tensor(want), rtol=1e-5, atol=1e-6)


def test_timm_model_api():
    torch.manual_seed(0)
    model = timm.create_model("tost_tiny_12_p16_224", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    assert model.get_classifier() is model.head and model.head.out_features == 5
    assert model.no_weight_decay() == {"cls_token"}  # the official top-level list, less absent names
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model(x), ref)
    model.set_grad_checkpointing(False)
    out, inter = model.forward_intermediates(x, indices=3)
    assert (
        len(inter) == 3 and inter[0].shape == (2, 192, 4, 4) and torch.equal(out, model.forward_features(x))
    )
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x), pre_logits=True))
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 4, 4, 192)
    model.reset_classifier(3, "avg")
    assert model(x).shape == (2, 3)
    feats = timm.create_model("tost_xca_tiny_12_p16_224", features_only=True).eval()
    assert [f.shape for f in feats(x)] == [(2, 192, 4, 4)] * 3
    assert timm.create_model(
        "tost_tiny_12_p16_224", device="meta", dtype=torch.bfloat16
    ).head.weight.dtype == (torch.bfloat16)


def test_same_seed_same_model():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = timm.create_model("tost_tiny_12_p8_224", num_classes=3).eval()
        outs.append(model(torch.ones(1, 3, 32, 32)))
    assert torch.equal(outs[0], outs[1])


def test_save_and_reload_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("tost_tiny_12_p16_224", num_classes=4).eval()
    x = torch.randn(1, 3, 32, 48)
    path = tmp_path / "tost.pth"
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, path)  # as timm's train.py writes it
    torch.manual_seed(1)
    loaded = timm.create_model("tost_tiny_12_p16_224", num_classes=4, checkpoint_path=str(path)).eval()
    assert torch.equal(loaded(x), model(x))


def _official_state_dict(size, depth, patch, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in _official_layout(size, depth, patch, "tssa", num_classes).items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = 0.05 * torch.randn(shape, generator=g)
    return sd


def test_official_key_loading(tmp_path):
    """A state dict written to the official key names loads through checkpoint_path and through
    pretrained_cfg's file (key-mapping filter: DDP prefix, (H,) temperatures, new classifier)."""
    official = _official_state_dict("tiny", 12, 16, num_classes=1000)
    plain = tmp_path / "tost_tiny_official.pth"
    torch.save({"model": official}, plain)
    model = timm.create_model("tost_tiny_12_p16_224", checkpoint_path=str(plain))
    got = model.state_dict()
    assert got.keys() == official.keys() and all(torch.equal(got[k], official[k]) for k in official)

    wrapped = {f"module.{k}": (v.view(-1) if k.endswith("attn.temp") else v) for k, v in official.items()}
    odd = tmp_path / "tost_tiny_ddp.pth"
    torch.save({"model": wrapped}, odd)
    model = timm.create_model(
        "tost_tiny_12_p16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(odd)), num_classes=10
    )
    got = model.state_dict()
    assert got["head.weight"].shape == (10, 192)  # classifier re-initialised for 10 classes
    same = [k for k in official if not k.startswith("head.")]
    assert all(torch.equal(got[k], official[k]) for k in same)
    with pytest.raises(RuntimeError, match="size mismatch"):
        timm.create_model("tost_small_12_p16_224", checkpoint_path=str(plain))


STAND_IN = """
import argparse, timm, torch
p = argparse.ArgumentParser()
p.add_argument("--model")
p.add_argument("--img-size", type=int)
a = p.parse_args()
m = timm.create_model(a.model, num_classes=2).eval()
print(tuple(m(torch.randn(1, 3, a.img_size, a.img_size)).shape), type(m).__name__)
"""


def test_script_runner_registers_the_family(tmp_path):
    """``python -m tssa.timm.run SCRIPT ...`` resolves --model tost_* inside an unmodified timm-style script."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    args = [sys.executable, "-m", "tssa.timm.run", str(script), "--model", "tost_xca_tiny_12_p16_224"]
    out = subprocess.run([*args, "--img-size", "32"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(1, 2) ToST")
    bad = subprocess.run(
        [sys.executable, "-m", "tssa.timm.run", str(tmp_path / "nope.py")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "is not a Python file" in bad.stderr


def test_train_steps_through_timm_data_and_optim(tmp_path):
    """What train.py does, in miniature: generated ImageFolder -> timm loader -> timm optimizer (weight
    decay groups from no_weight_decay) -> a few steps on the loss; the loss falls on a separable task."""
    from PIL import Image
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm.optim import create_optimizer_v2

    g = torch.Generator().manual_seed(0)
    for cls, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (tmp_path / cls).mkdir()
        for i in range(4):
            noise = torch.randint(-20, 21, (32, 32, 3), generator=g)
            img = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(img).save(tmp_path / cls / f"{i}.png")
    torch.manual_seed(0)
    model = timm.create_model("tost_tiny_12_p16_224", num_classes=2, img_size=32)
    resolve = getattr(timm.data, "resolve_input_data_config", None)  # newer scripts; older ones call
    cfg = resolve(model, {"img_size": 32}) if resolve else resolve_data_config({"img_size": 32}, model=model)
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN
    loader = create_loader(
        create_dataset("", root=str(tmp_path)),
        input_size=cfg["input_size"],
        batch_size=8,
        is_training=False,
        mean=cfg["mean"],
        std=cfg["std"],
        num_workers=0,
        persistent_workers=False,  # older timm defaults to True, which needs workers
        use_prefetcher=False,
    )
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for grp in opt.param_groups if grp["weight_decay"] == 0.0 for p in grp["params"]}
    assert id(model.cls_token) in no_decay and id(model.blocks[0].gamma1) in no_decay
    assert (
        id(model.blocks[0].attn.qkv.weight) not in no_decay and id(model.blocks[0].attn.temp) not in no_decay
    )
    model.train()
    losses = []
    for _ in range(6):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_model_calls_of_timm_scripts(tmp_path):
    """The calls validate.py and benchmark.py make on a model: resolve_model_input_args -> create_model
    (scriptable, None-valued options) -> load_checkpoint -> torch.jit.script; fvcore flop counting."""
    from timm.models import load_checkpoint

    torch.manual_seed(0)
    src = timm.create_model("tost_tiny_12_p16_224", num_classes=3).eval()
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": src.state_dict(), "epoch": 1}, path)
    options = dict(pretrained=False, num_classes=3, global_pool=None, scriptable=True)
    resolve = getattr(timm.models, "resolve_model_input_args", None)  # newer scripts
    if resolve is not None:
        kwargs = resolve("tost_tiny_12_p16_224", {"img_size": 64}, **options)
    else:  # older scripts pass the options to create_model directly
        kwargs = dict(model_name="tost_tiny_12_p16_224", img_size=64, **options)
    model = timm.create_model(**kwargs, drop_rate=0.0, drop_path_rate=None, drop_block_rate=None).eval()
    load_checkpoint(model, str(path))
    x = torch.randn(2, 3, 64, 64)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), src(x), rtol=1e-4, atol=1e-5)
    fvcore = pytest.importorskip("fvcore.nn")
    assert fvcore.FlopCountAnalysis(model, x).unsupported_ops_warnings(False).total() > 0


def test_filter_maps_xcit_style_names_and_temperature_layouts():
    model = timm.create_model("tost_xca_tiny_12_p16_224", device="meta")
    sd = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}
    sd = {k.replace("pos_embeder.", "pos_embed."): v for k, v in sd.items()}  # timm's XCiT naming
    sd["blocks.0.attn.temperature"] = torch.arange(4.0)  # (H,) instead of (H, 1, 1)
    sd["dist_token"] = torch.zeros(1, 1, 192)
    out = checkpoint_filter_fn({"model": sd}, model)
    assert out.keys() == model.state_dict().keys()
    assert (
        out["blocks.0.attn.temperature"].shape == (4, 1, 1) and out["blocks.0.attn.temperature"][3, 0, 0] == 3
    )


def test_docstring_examples():
    import doctest
    import importlib

    for module in (importlib.import_module("tssa.timm"), importlib.import_module("tssa.timm.tost")):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# ---- the official training recipe (tost_vision/main.py with timm 0.4.12) ----


def _readme_recipe_rows() -> dict[str, str]:
    """The README's ToST table: first code span of the official cell -> the project's cell."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## ToST in timm", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        key = re.search(r"`([^`]+)`", cells[0]) if line.startswith("| ") and len(cells) == 2 else None
        if key:
            rows[key.group(1)] = cells[1]
    return rows


def _official_vision_decayed(model) -> set[str]:
    """timm 0.4.12's create_optimizer(args, model) as main.py calls it, written out: no decay for 1-D
    parameters, names ending in '.bias' and the names the official top-level no_weight_decay() returns."""
    skip = {"pos_embed", "cls_token", "dist_token"}
    return {
        n
        for n, p in model.named_parameters()
        if p.requires_grad and not (len(p.shape) == 1 or n.endswith(".bias") or n in skip)
    }


@pytest.mark.parametrize(
    "name", ["tost_tiny_12_p16_224", "tost_xca_tiny_12_p8_224", "tost_softmax_tiny_24_p16_224"]
)
def test_timm_optimizer_decays_what_the_official_vision_recipe_decays(name):
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    model = timm.create_model(name, num_classes=10)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 1 for p in model.parameters())  # 0-d parameters would split the two rules

    def decayed(opt):
        return {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}

    got = decayed(create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05))
    assert got == _official_vision_decayed(model)
    temps = {n for n in names.values() if n.endswith(("attn.temp", "attn.temperature"))}
    assert temps <= got and ("softmax" in name) == (not temps)  # the official recipe decays them
    # the language recipe's exemption of the temperatures, as the README shows it
    other = create_optimizer_v2(
        model,
        "adamw",
        lr=1e-3,
        weight_decay=0.05,
        param_group_fn=lambda m: param_groups_weight_decay(
            m, 0.05, no_weight_decay_list={"cls_token", "blocks.*.attn.temp", "blocks.*.attn.temperature"}
        ),
    )
    assert decayed(other) == got - temps


def _dropout_places(model) -> dict[str, float]:
    """Module path -> rate of every dropout (nn.Dropout, DropPath, TSSA's gate dropout) with rate > 0;
    timm 1.x's Mlp.drop1/drop2 count as the one Mlp.drop of timm 0.4 (both must have its rate)."""
    from timm.layers import DropPath

    places: dict[str, float] = {}
    for n, m in model.named_modules():
        rate = None
        if isinstance(m, torch.nn.Dropout):
            rate = m.p
        elif isinstance(m, DropPath):
            rate = m.drop_prob
        elif isinstance(m, TokenStatisticsAttention):
            n, rate = f"{n}.attn_drop", m.attn_drop
        if rate:
            key = re.sub(r"\.mlp\.drop[12]$", ".mlp.drop", n)
            assert places.setdefault(key, rate) == rate, key
    return places


def _official_dropout_places(depth: int, drop: float, drop_path: float, attn_drop: float) -> dict[str, float]:
    """Where tost_vision/tost.py's VisionTransformer(drop_rate=drop, drop_path_rate=drop_path,
    attn_drop_rate=attn_drop) puts dropout (rates > 0 only): pos_drop; in each TSSA block the gate
    (attn.attn_drop), attn.to_out.1, the Mlp's drop and drop_path; in each class-attention block
    attn.attn_drop, attn.proj_drop and the Mlp's drop (no drop path); nothing before the head."""
    places = {"pos_drop": drop}
    for i in range(depth):
        p = f"blocks.{i}"
        places.update({f"{p}.attn.attn_drop": attn_drop, f"{p}.attn.to_out.1": drop, f"{p}.mlp.drop": drop})
        places[f"{p}.drop_path"] = drop_path
    for j in range(2):
        p = f"cls_attn_blocks.{j}"
        places.update({f"{p}.attn.attn_drop": attn_drop, f"{p}.attn.proj_drop": drop, f"{p}.mlp.drop": drop})
    return {k: v for k, v in places.items() if v > 0}


def _kwargs_from_readme(cell: str, values: dict[str, float]) -> dict[str, float]:
    code = re.search(r"`([^`]+)`", cell).group(1)  # e.g. "pos_drop_rate=P, proj_drop_rate=P"
    pairs = [part.strip().split("=") for part in code.split(",")]
    return {k.strip(): values[v.strip()] for k, v in pairs}


def test_readme_dropout_arguments_reproduce_the_official_flags():
    rows = _readme_recipe_rows()
    drop, drop_path = 0.1, 0.05
    kwargs = _kwargs_from_readme(rows["--drop P"], {"P": drop})
    kwargs |= _kwargs_from_readme(rows["--drop-path Q"], {"Q": drop_path})
    assert kwargs == {"pos_drop_rate": drop, "proj_drop_rate": drop, "drop_path_rate": drop_path}
    for name, depth in (("tost_tiny_12_p16_224", 12), ("tost_xca_tiny_24_p16_224", 24)):
        model = timm.create_model(name, device="meta", attn_drop_rate=0.02, **kwargs)
        want = _official_dropout_places(depth, drop, drop_path, attn_drop=0.02)
        if "xca" in name:  # XCA's attn_drop is a module on the softmax, not TSSA's gate
            want = {k.replace(".attn.to_out.1", ".attn.proj_drop"): v for k, v in want.items()}
        assert _dropout_places(model) == want
    # timm's own convention: drop_rate alone is dropout before the classifier, which the official model lacks
    head_only = timm.create_model("tost_tiny_12_p16_224", device="meta", drop_rate=drop)
    assert _dropout_places(head_only) == {"head_drop": drop}


def test_which_weights_each_documented_loading_path_gives(tmp_path):
    """An official-style checkpoint (main.py saves 'model' and 'model_ema', plus optimizer state and
    the argparse namespace): the README's rows say which path gives which, and each path does."""
    from timm.models import load_checkpoint

    rows = _readme_recipe_rows()
    assert "use_ema=False" in rows["model"] and "checkpoint_filter_fn" in rows["model"]
    assert "checkpoint_path=path" in rows["model_ema"] and "load_checkpoint(model, path)" in rows["model_ema"]
    name = "tost_tiny_12_p16_224"
    torch.manual_seed(0)
    trained = timm.create_model(name, num_classes=3).state_dict()
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in trained.items()}  # differs everywhere
    path = tmp_path / "checkpoint.pth"
    ckpt = {"model": trained, "model_ema": ema, "epoch": 3, "args": argparse.Namespace(model=name, drop=0.0)}
    torch.save(dict(ckpt, optimizer={"state": {}, "param_groups": []}, lr_scheduler={}, scaler={}), path)

    def same(model, want):
        got = model.state_dict()
        return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    assert same(timm.create_model(name, num_classes=3, checkpoint_path=str(path)), ema)
    model = timm.create_model(name, num_classes=3)
    load_checkpoint(model, str(path))
    assert same(model, ema)
    load_checkpoint(model, str(path), use_ema=False)
    assert same(model, trained)
    pre = timm.create_model(
        name, pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(file=str(path), num_classes=3)
    )
    assert same(pre, ema)
    model = timm.create_model(name, num_classes=3)
    model.load_state_dict(checkpoint_filter_fn(torch.load(path, weights_only=False), model))
    assert same(model, trained)


def test_the_readme_parameter_table_is_what_create_model_counts():
    """Every count in the README's ToST parameter table (a generated block) is the registered model's."""
    import re
    from pathlib import Path

    from benchmarks.studies.classification.params import FAMILIES, ROWS, count

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- tost-params:begin -->")[1].split("<!-- tost-params:end -->")[0]
    lines = [ln for ln in block.splitlines() if re.match(r"^\| (tiny|small|medium|large), depth", ln)]
    assert len(lines) == len(ROWS)
    for (size, depth, _), line in zip(ROWS, lines):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0].startswith(f"{size}, depth {depth}, p16")
        for fam, cell in zip(FAMILIES, cells[1:4]):
            assert int(cell.replace(",", "")) == count(f"{fam}_{size}_{depth}_p16_224"), (fam, size)
