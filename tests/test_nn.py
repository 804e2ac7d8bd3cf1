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
