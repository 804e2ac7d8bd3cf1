"""Token-mixer modules: one interface, swappable by name, equal to the functional core."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tssa import SoftmaxAttention, TokenStatisticsAttention, build_attention
from tssa.ops.naive import tssa_naive


def test_tssa_layer_equals_projection_core_projection():
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(48, num_heads=4, qkv_bias=True).eval()
    with torch.no_grad():
        layer.temp.copy_(torch.tensor([[0.5], [1.0], [2.0], [3.0]]))
    x = torch.randn(2, 37, 48)
    w = F.linear(x, layer.qkv.weight, layer.qkv.bias).view(2, 37, 4, 12).transpose(1, 2)  # (B, H, N, D)
    y = tssa_naive(w, layer.temp.view(-1)).transpose(1, 2).reshape(2, 37, 48)
    expected = F.linear(y, layer.to_out[0].weight, layer.to_out[0].bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_tssa_layer_parameter_names_follow_official_checkpoints():
    layer = TokenStatisticsAttention(192, num_heads=4, qkv_bias=True)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {
        "qkv.weight": (192, 192),
        "qkv.bias": (192,),
        "temp": (4, 1),
        "to_out.0.weight": (192, 192),
        "to_out.0.bias": (192,),
    }
    assert layer.no_weight_decay() == {"temp"}


def test_softmax_fused_equals_materialised():
    torch.manual_seed(0)
    fused = SoftmaxAttention(64, num_heads=8, qkv_bias=True, fused_attn=True).eval()
    plain = SoftmaxAttention(64, num_heads=8, qkv_bias=True, fused_attn=False).eval()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(3, 50, 64)
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)
    for causal in (True,):
        fused.causal = plain.causal = causal
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["tssa", "softmax"])
@pytest.mark.parametrize("causal", [False, True])
def test_same_interface_and_nchw(kind, causal):
    torch.manual_seed(0)
    layer = build_attention(kind, 32, num_heads=2, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, causal=causal)
    x = torch.randn(2, 32, 5, 7)
    y = layer.forward_nchw(x)
    assert y.shape == x.shape
    tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
    torch.testing.assert_close(y, layer(tokens).transpose(1, 2).reshape_as(x))
    y.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_causal_layer_with_position_bias():
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(32, num_heads=4, causal=True, max_len=16)
    assert layer.no_weight_decay() == {"temp", "pos_bias"}
    x = torch.randn(2, 10, 32)
    layer(x).sum().backward()
    assert layer.pos_bias.grad.shape == (4, 16)
    assert layer.pos_bias.grad[:, :10].abs().sum() > 0 and layer.pos_bias.grad[:, 10:].abs().sum() == 0
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        layer(torch.randn(1, 17, 32))


def test_attn_drop_acts_only_in_training():
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(32, num_heads=4, attn_drop=0.5)
    x = torch.randn(2, 20, 32)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_bad_construction_is_rejected():
    with pytest.raises(ValueError, match="dim 30 must be divisible by num_heads 4"):
        TokenStatisticsAttention(30, num_heads=4)
    with pytest.raises(ValueError, match="unknown attention 'linear'"):
        build_attention("linear", 32)


def test_plain_import_needs_torch_only():
    code = (
        "import sys, tssa, tssa.ops, tssa.nn, tssa.utils; "
        "heavy = sorted(m for m in ('ultralytics', 'timm', 'pandas', 'matplotlib', 'cv2') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _official_vision_forward(x: torch.Tensor, sd: dict, heads: int) -> torch.Tensor:
    """Our reading of tost_vision/tost.py's AttentionTSSA.forward (written out here, not imported)."""
    b, n, c = x.shape
    w = F.linear(x, sd["qkv.weight"], sd.get("qkv.bias")).view(b, n, heads, c // heads).transpose(1, 2)
    unit = w / w.norm(dim=2, keepdim=True).clamp_min(1e-12)  # F.normalize over tokens, eps 1e-12
    pi = torch.softmax(unit.pow(2).sum(-1) * sd["temp"], dim=1)  # temp (H, 1) on (B, H, N); over heads
    share = pi / (pi.sum(-1, keepdim=True) + 1e-8)  # (B, H, N)
    dots = share.unsqueeze(-2) @ w.pow(2)  # (B, H, 1, D)
    y = -(w * pi.unsqueeze(-1)) * (1.0 / (1.0 + dots))  # (B, H, N, D)
    y = y.transpose(1, 2).reshape(b, n, c)
    return F.linear(y, sd["to_out.0.weight"], sd.get("to_out.0.bias"))


def _official_language_forward(x: torch.Tensor, sd: dict, heads: int) -> torch.Tensor:
    """Our reading of tost_lang/model_TSSA.py's CausalSelfAttention_TSSA.forward (eval: no dropout)."""
    b, t, c = x.shape
    w = F.linear(x, sd["c_attn.weight"], sd.get("c_attn.bias")).view(b, t, heads, c // heads).transpose(1, 2)
    sq = w.pow(2)  # (B, H, T, D)
    normed = sq / sq.cumsum(dim=-2).clamp_min(1e-12) + sd["denom_bias"][:, :t, :]  # + (H, T, 1)
    pi = torch.softmax(normed.sum(-1) * sd["temp"], dim=1)  # (B, H, T)
    dots = (sq * pi.unsqueeze(-1)).cumsum(dim=-2) / (pi.cumsum(dim=-1) + 1e-8).unsqueeze(-1)
    y = -(w * pi.unsqueeze(-1)) * (1.0 / (1.0 + dots))
    y = y.transpose(1, 2).reshape(b, t, c)
    return F.linear(y, sd["c_proj.weight"], sd.get("c_proj.bias"))


def _official_layer_dict(layout: str, bias: bool, c: int = 24, heads: int = 3, block: int = 16) -> dict:
    g = torch.Generator().manual_seed(1)
    names = ("qkv", "to_out.0") if layout == "vision" else ("c_attn", "c_proj")
    sd = {f"{m}.weight": 0.3 * torch.randn(c, c, generator=g, dtype=torch.float64) for m in names}
    if bias:
        sd.update({f"{m}.bias": 0.1 * torch.randn(c, generator=g, dtype=torch.float64) for m in names})
    sd["temp"] = torch.tensor([[0.5], [1.5], [3.0]], dtype=torch.float64)
    if layout == "language":
        sd["denom_bias"] = 0.2 * torch.randn(heads, block, 1, generator=g, dtype=torch.float64)
    return sd


# the layer's parameter for each official key
_OURS = {"c_attn": "qkv", "c_proj": "to_out.0", "denom_bias": "pos_bias"}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", ["vision", "language"])
@pytest.mark.parametrize("impl", ["naive", "auto"])
def test_from_official_matches_the_official_forward_in_float64(layout, bias, impl):
    """Outputs and every gradient (input and weights) of a layer built by from_official equal our reading
    of the official forward, in float64; the causal bias is used on a prefix (T=11 of block_size=16)."""
    official = _official_layer_dict(layout, bias)
    layer = TokenStatisticsAttention.from_official(official, num_heads=3, impl=impl)
    assert layer.causal == (layout == "language") and layer.qkv.weight.dtype == torch.float64
    assert (layer.qkv.bias is not None) == bias and (layer.to_out[0].bias is not None) == bias
    assert (layer.pos_bias is not None) == (layout == "language")
    if layout == "language":
        assert layer.pos_bias.shape == (3, 16)
    leaves = {k: v.clone().requires_grad_(True) for k, v in official.items()}
    x = torch.randn(2, 11, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    forward = _official_vision_forward if layout == "vision" else _official_language_forward
    want = forward(x_ref, leaves, 3)
    got = layer(x_ours)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    upstream = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    want.backward(upstream)
    got.backward(upstream)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    params = dict(layer.named_parameters())
    for key, leaf in leaves.items():
        head, _, tail = key.partition(".")
        ours = params[f"{_OURS.get(head, head)}.{tail}" if tail else _OURS.get(key, key)]
        ref_grad = leaf.grad[:, :, 0] if key == "denom_bias" else leaf.grad  # (H, block, 1) -> (H, block)
        torch.testing.assert_close(ours.grad, ref_grad, rtol=1e-10, atol=1e-12, msg=key)
    assert leaves["temp"].grad.abs().sum() > 0
    if layout == "language":
        assert leaves["denom_bias"].grad[:, :11].abs().sum() > 0


def test_from_official_rejects_what_it_cannot_express():
    vision = _official_layer_dict("vision", bias=True)
    with pytest.raises(
        ValueError, match="vision layout misses to_out.0.weight.*language layout misses c_attn"
    ):
        TokenStatisticsAttention.from_official({k: v for k, v in vision.items() if k != "to_out.0.weight"}, 3)
    with pytest.raises(ValueError, match=r"temp has shape \(3, 1\), expected \(4, 1\).*num_heads=3"):
        TokenStatisticsAttention.from_official(vision, num_heads=4)
    softmax_like = dict(vision, **{"qkv.weight": torch.zeros(72, 24, dtype=torch.float64)})
    with pytest.raises(ValueError, match="softmax attention"):
        TokenStatisticsAttention.from_official(softmax_like, num_heads=3)
    with pytest.raises(RuntimeError, match="Unexpected key.*gamma1"):
        TokenStatisticsAttention.from_official(dict(vision, gamma1=torch.ones(24)), num_heads=3)
    layer = TokenStatisticsAttention(24, num_heads=3, proj_bias=False)
    assert "to_out.0.bias" not in layer.state_dict() and layer.to_out[0].bias is None


def test_causal_layer_decays_what_the_official_language_recipe_decays():
    """timm's grouping with the layer's no_weight_decay() decays exactly what model_TSSA.py's
    configure_optimizers decays, with its rule written out on the official names."""
    param_groups_weight_decay = pytest.importorskip("timm.optim").param_groups_weight_decay

    for bias in (True, False):
        official = _official_layer_dict("language", bias)
        # configure_optimizers: decay iff dim >= 2 and the name contains neither 'temp' nor 'denom'
        decayed = {
            k for k, v in official.items() if v.dim() >= 2 and not any(s in k for s in ("temp", "denom"))
        }
        want = {f"{_OURS[k.split('.')[0]]}.{k.split('.', 1)[1]}" for k in decayed}
        layer = TokenStatisticsAttention.from_official(official, num_heads=3)
        groups = param_groups_weight_decay(layer, 0.1, no_weight_decay_list=layer.no_weight_decay())
        names = {id(p): n for n, p in layer.named_parameters()}
        got = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
        assert got == want == {"qkv.weight", "to_out.0.weight"}
