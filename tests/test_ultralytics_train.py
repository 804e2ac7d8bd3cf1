"""The Ultralytics life cycle of a TSSA detector on CPU, offline, on a generated dataset.

Train, val, predict, save, reload in a fresh process, resume, ONNX export; a seeded 2-epoch training
run twice gives identical metrics and weights; a socket guard fails the test on any connection
attempt.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tssa.ultralytics as tu
from benchmarks.studies.detection.data.shapes import CLASSES, make_shapes

IMGSZ = 64

# after tssa.ultralytics, which applies the offline settings before ultralytics is first imported
from ultralytics import YOLO  # noqa: E402

TRAIN = dict(imgsz=IMGSZ, batch=4, seed=0, exist_ok=True, verbose=False, device="cpu", **tu.TRAIN_DEFAULTS)


class SocketGuard:
    """Records and refuses every network connection attempt (DNS lookups included)."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def _refuse(self, what: str):
        def refuse(*args, **kwargs):
            self.attempts.append(f"{what}{args}")
            raise OSError(f"network access refused by the test's socket guard: {what}")

        return refuse

    def install(self, mp: pytest.MonkeyPatch) -> None:
        inet = (socket.AF_INET, socket.AF_INET6)
        connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
        guard = self

        def guarded_connect(sock, address):
            if sock.family in inet:
                guard.attempts.append(f"connect {address!r}")
                raise OSError(f"network access refused by the test's socket guard: connect {address!r}")
            return connect(sock, address)

        def guarded_connect_ex(sock, address):
            if sock.family in inet:
                guard.attempts.append(f"connect_ex {address!r}")
                raise OSError(f"network access refused by the test's socket guard: connect_ex {address!r}")
            return connect_ex(sock, address)

        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
            mp.setattr(socket, name, self._refuse(name))


@pytest.fixture
def no_network(monkeypatch):
    guard = SocketGuard()
    guard.install(monkeypatch)
    yield guard
    assert guard.attempts == [], f"network connection attempted: {guard.attempts}"


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes") / "data", n_train=8, n_val=4, imgsz=IMGSZ, seed=0)


def test_socket_guard_catches_a_connection(monkeypatch):
    guard = SocketGuard()
    guard.install(monkeypatch)
    with pytest.raises(OSError, match="socket guard"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    with pytest.raises(OSError, match="socket guard"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("192.0.2.1", 80))
    with pytest.raises(OSError, match="socket guard"):
        socket.getaddrinfo("localhost", 80)
    assert len(guard.attempts) == 3


def test_shapes_dataset_is_deterministic_and_valid(tmp_path):
    a = make_shapes(tmp_path / "a", n_train=6, n_val=2, imgsz=64, seed=5)
    b = make_shapes(tmp_path / "b", n_train=6, n_val=2, imgsz=64, seed=5)
    c = make_shapes(tmp_path / "c", n_train=6, n_val=2, imgsz=64, seed=6)

    def digest(root: Path) -> str:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "data.yaml")
        return hashlib.sha256(
            b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)
        ).hexdigest()

    assert digest(a.parent) == digest(b.parent) != digest(c.parent)
    assert make_shapes(tmp_path / "a", n_train=6, n_val=2, imgsz=64, seed=5) == a  # reused as it is
    with pytest.raises(ValueError, match="exists and is not a shapes dataset"):
        make_shapes(tmp_path / "a", n_train=6, n_val=2, imgsz=64, seed=7)
    with pytest.raises(ValueError, match="imgsz"):
        make_shapes(tmp_path / "d", imgsz=8)
    with pytest.raises(ValueError, match="unknown argument"):
        make_shapes(tmp_path / "d", n_imgs=3)
    assert not (tmp_path / "d").exists()
    labels = [
        line.split() for p in (a.parent / "labels").rglob("*.txt") for line in p.read_text().splitlines()
    ]
    assert len(labels) >= 8
    cls = np.array([int(r[0]) for r in labels])
    box = np.array([[float(v) for v in r[1:]] for r in labels])
    assert set(cls) <= set(range(len(CLASSES)))
    assert (box > 0).all() and (box <= 1).all()
    assert (box[:, :2] - box[:, 2:] / 2 >= -1e-6).all() and (box[:, :2] + box[:, 2:] / 2 <= 1 + 1e-6).all()
    assert box[:, 2].max() / box[:, 2].min() > 2.5  # several scales


def _train(data_yaml: Path, project: Path, name: str, model: str = "yolo11n-tssa.yaml", **kw):
    model = YOLO(model)
    start = time.perf_counter()
    result = model.train(data=str(data_yaml), epochs=2, project=str(project), name=name, **TRAIN, **kw)
    return model, result, time.perf_counter() - start


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in YOLO(str(path)).model.state_dict().items()}


def _losses(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_two_epoch_training_is_deterministic(data_yaml, tmp_path, no_network):
    runs = [_train(data_yaml, tmp_path, f"run{i}") for i in range(2)]
    print(f"\n2-epoch yolo11n-tssa training on {data_yaml.parent}: {runs[0][2]:.1f} s, {runs[1][2]:.1f} s")
    (m0, r0, _), (m1, r1, _) = runs
    if _losses(tmp_path / "run0") != _losses(tmp_path / "run1"):
        # control: stock YOLO11 trained twice in a fresh process, as the two runs above were
        code = (
            "import json, sys, tssa.ultralytics as tu\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from test_ultralytics_train import _losses, _train\n"
            "from pathlib import Path\n"
            "p = Path(sys.argv[3])\n"
            "[_train(Path(sys.argv[2]), p, f'stock{i}', model='yolo11n.yaml') for i in range(2)]\n"
            "print(json.dumps(_losses(p / 'stock0') == _losses(p / 'stock1')))\n"
        )
        args = [sys.executable, "-c", code, str(Path(__file__).parent), str(data_yaml), str(tmp_path)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=900, env=dict(os.environ))
        assert r.returncode == 0, r.stderr[-3000:]
        if not json.loads(r.stdout.strip().splitlines()[-1]):
            import ultralytics

            pytest.skip(
                f"Ultralytics {ultralytics.__version__}: two seeded stock yolo11n runs in one process differ"
            )
    assert r0.results_dict == r1.results_dict
    assert _losses(tmp_path / "run0") == _losses(tmp_path / "run1")
    assert len(_losses(tmp_path / "run0")) == 2
    w0, w1 = _weights(tmp_path / "run0/weights/last.pt"), _weights(tmp_path / "run1/weights/last.pt")
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert any(".attn.temp" in k for k in w0)  # the trained model holds the TSSA layer
    temps = {id(p) for n, p in m0.trainer.model.named_parameters() if n.endswith(".attn.temp")}
    groups = [g for g in m0.trainer.optimizer.param_groups if any(id(p) in temps for p in g["params"])]
    assert temps and groups and all(g["weight_decay"] == 0.0 for g in groups)  # tau skips weight decay


# every optimizer name Ultralytics' build_optimizer accepts (checked against its source below);
# "auto" picks by the number of iterations, so it is tried with a short and a long run
OPTIMIZERS = ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "MuSGD")
AUTO_RUNS = {"auto-short": 10, "auto-long": 10**6}


def _trainer_stub():
    from types import SimpleNamespace

    args = SimpleNamespace(lr0=0.01, momentum=0.9, warmup_bias_lr=0.1, optimizer="auto")
    return SimpleNamespace(args=args, data={"nc": 80})


def _build_and_step(build, model, name: str):
    """Build the optimizer for ``model``, give every parameter a zero gradient and take one step.
    Returns (optimizer, {parameter name: (before, after)}): with zero gradients only weight decay moves
    a parameter."""
    iterations = AUTO_RUNS.get(name, 10)
    kw = dict(name="auto" if name in AUTO_RUNS else name, lr=1e-2, decay=5e-2, iterations=iterations)
    opt = build(_trainer_stub(), model, **kw)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return opt, {n: (before[n], p.detach()) for n, p in model.named_parameters()}


def test_optimizer_list_covers_ultralytics():
    import inspect
    import re

    from ultralytics.engine.trainer import BaseTrainer

    source = inspect.getsource(BaseTrainer.build_optimizer._tssa_stock)
    known = set(re.findall(r'"(\w+)"', re.search(r"optimizers = \{([^}]*)\}", source).group(1)))
    assert {n.lower() for n in known} == {n.lower() for n in (*OPTIMIZERS, "auto")}, known


@pytest.fixture(scope="module")
def tssa_model():
    return YOLO(tu.model_yaml("yolo11-tssa", "n")).model


@pytest.mark.parametrize("name", [*OPTIMIZERS, *AUTO_RUNS])
def test_every_optimizer_steps_with_temperatures_exempt_from_decay(name, tssa_model):
    from copy import deepcopy

    from ultralytics.engine.trainer import BaseTrainer

    model = deepcopy(tssa_model)
    opt, moved = _build_and_step(BaseTrainer.build_optimizer, model, name)
    temps = [n for n in moved if n.endswith("attn.temp")]
    assert temps
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    for n in temps:  # zero gradient, no decay: the temperature does not move
        assert torch.equal(*moved[n]), (type(opt).__name__, n)
    qkv = [n for n in moved if n.endswith("attn.qkv.weight")]
    assert qkv and all(not torch.equal(*moved[n]) for n in qkv)  # decay is on for the other weights
    assert all(torch.isfinite(after).all() for _, after in moved.values())
    # the stock builder decays the temperatures: the check above can fail
    stock = deepcopy(tssa_model)
    _, plain = _build_and_step(BaseTrainer.build_optimizer._tssa_stock, stock, name)
    assert any(not torch.equal(*plain[n]) for n in temps)


def test_stock_models_get_the_stock_optimizer():
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer

    kw = dict(name="SGD", lr=1e-3, decay=5e-4, iterations=10)
    stock = YOLO("yolo11n.yaml").model
    plain = BaseTrainer.build_optimizer._tssa_stock(SimpleNamespace(), stock, **kw)
    wrapped = BaseTrainer.build_optimizer(SimpleNamespace(), stock, **kw)
    assert [len(g["params"]) for g in wrapped.param_groups] == [len(g["params"]) for g in plain.param_groups]


def test_untagged_optimizer_is_refused_with_the_fix():
    model = YOLO(tu.model_yaml("yolo11-tssa", "n")).model
    opt = torch.optim.SGD([{"params": list(model.parameters()), "weight_decay": 5e-4}], lr=1e-3)
    with pytest.raises(ValueError, match=r"tagged param_group='bn'.*ultralytics>=8\.4\.113"):
        tu.exempt_from_weight_decay(opt, model)


class _Interrupt(Exception):
    pass


def _stop_after_first_epoch(trainer):
    if trainer.epoch == 0:
        raise _Interrupt


@pytest.mark.slow
def test_life_cycle_offline(data_yaml, tmp_path, no_network):
    # train, interrupted after the first epoch (last.pt keeps the optimizer), then resume
    model = YOLO("yolo11n-tssa.yaml")
    model.add_callback("on_fit_epoch_end", _stop_after_first_epoch)
    with pytest.raises(_Interrupt):
        model.train(data=str(data_yaml), epochs=2, project=str(tmp_path), name="run", **TRAIN)
    last = tmp_path / "run/weights/last.pt"
    assert torch.load(last, weights_only=False)["epoch"] == 0
    YOLO(str(last)).train(resume=True)
    assert [int(r["epoch"]) for r in _losses(tmp_path / "run")] == [1, 2]
    best = tmp_path / "run/weights/best.pt"
    assert torch.load(best, weights_only=False)["epoch"] == -1  # a finished run: optimizer stripped

    # val, predict, save
    trained = YOLO(str(best))
    assert isinstance(trained.model.model[10], tu.C2TSSA)
    metrics = trained.val(
        data=str(data_yaml),
        imgsz=IMGSZ,
        batch=4,
        project=str(tmp_path),
        name="val",
        device="cpu",
        **tu.TRAIN_DEFAULTS,
    )
    assert 0.0 <= metrics.box.map <= 1.0
    images = sorted((data_yaml.parent / "images/val").glob("*.png"))
    results = trained.predict([str(p) for p in images], imgsz=IMGSZ, conf=0.0, device="cpu", verbose=False)
    assert len(results) == len(images) and all(r.boxes.data.shape[1] == 6 for r in results)
    saved = tmp_path / "saved.pt"
    trained.save(saved)

    # reload the saved checkpoint in a fresh process that never imports tssa itself
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expect = YOLO(str(saved)).model.float().eval()(x)[0]
    code = (
        "import json, sys, torch\n"
        "from ultralytics import YOLO\n"
        f"model = YOLO({str(saved)!r})\n"
        "layer = model.model.model[10]\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "with torch.no_grad():\n"
        "    y = model.model.float().eval()(x)[0]\n"
        f"torch.save(y, {str(tmp_path / 'y.pt')!r})\n"
        "print(json.dumps({'type': type(layer).__module__ + '.' + type(layer).__name__}))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"type": "tssa.ultralytics.modules.C2TSSA"}
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expect, rtol=0, atol=1e-5)

    # ONNX export; onnxruntime agrees with torch within 1e-4
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    exported = Path(YOLO(str(best)).export(format="onnx", imgsz=IMGSZ, simplify=False, device="cpu"))
    onnx.checker.check_model(str(exported))
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (y_onnx,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    reference = YOLO(str(best)).model.float().fuse().eval()
    with torch.no_grad():
        y_torch = reference(x)[0]
    assert (
        y_onnx.shape
        == tuple(y_torch.shape)
        == (1, 4 + len(CLASSES), sum((IMGSZ // s) ** 2 for s in (8, 16, 32)))
    )
    np.testing.assert_allclose(y_onnx, y_torch.numpy(), rtol=0, atol=1e-4)
