"""Contrastive losses: known values, temperature clamping, symmetry, and distributed (2 gloo processes under DDP)
equal to one process on the full batch — loss and every parameter gradient, logit scale and bias included."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from training.losses import (
    MAX_LOGIT_SCALE,
    ClipLoss,
    SigLipLoss,
    gather_features,
    init_logit_params,
    is_distributed,
)

# ---------------------------------------------------------------------------------------------------------------
# single process


def _naive_clip(image, text, logit_scale, groups=None):
    """Row-by-row reference: symmetric InfoNCE, positives = same group (or the diagonal)."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    s = min(float(logit_scale), MAX_LOGIT_SCALE)
    n = len(image)
    groups = list(range(n)) if groups is None else [int(g) for g in groups]
    total = 0.0
    for a, b in ((image, text), (text, image)):
        for i in range(n):
            logits = [math.exp(s) * float(a[i] @ b[j]) for j in range(n)]
            lse = math.log(sum(math.exp(v) for v in logits))
            pos = [j for j in range(n) if groups[j] == groups[i]]
            total += -sum(logits[j] - lse for j in pos) / len(pos) / n
    return total / 2


def _naive_siglip(image, text, logit_scale, logit_bias):
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    s, b, n = math.exp(min(float(logit_scale), MAX_LOGIT_SCALE)), float(logit_bias), len(image)
    total = 0.0
    for i in range(n):
        for j in range(n):
            y = 1.0 if i == j else -1.0
            z = y * (s * float(image[i] @ text[j]) + b)
            total += math.log1p(math.exp(-z))  # -log sigmoid(z)
    return total / n


def test_clip_known_value_on_orthogonal_pairs():
    eye = torch.eye(2, dtype=torch.float64)
    # logit scale 0 → logits = identity; each row: -log(e / (e + 1)) = log(1 + 1/e)
    loss = ClipLoss()(eye, eye, torch.tensor(0.0, dtype=torch.float64))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-12)


def test_clip_groups_known_value_and_no_groups_equivalence():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    # identical pairs in one group: each row has two equal logits, both positive → loss log 2 at any scale
    loss = ClipLoss()(x, x, torch.tensor(2.0, dtype=torch.float64), torch.tensor([0, 0]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    s = torch.tensor(1.5, dtype=torch.float64)
    assert ClipLoss()(img, txt, s, torch.arange(6)).item() == pytest.approx(ClipLoss()(img, txt, s).item(), abs=1e-12)


@pytest.mark.parametrize("groups", [None, [0, 1, 0, 2, 3, 2, 4]])
def test_clip_matches_naive_reference(groups):
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    s = torch.tensor(2.3, dtype=torch.float64)
    grp = None if groups is None else torch.tensor(groups)
    assert ClipLoss()(img, txt, s, grp).item() == pytest.approx(_naive_clip(img, txt, s, grp), abs=1e-10)


def test_siglip_known_value():
    eye = torch.eye(2, dtype=torch.float64)
    zero = torch.tensor(0.0, dtype=torch.float64)
    # scale 1, bias 0: diagonal -log σ(1) = log(1 + 1/e), off-diagonal -log σ(-(0)) = log 2; sum over 4 pairs / 2
    loss = SigLipLoss()(eye, eye, zero, zero)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)) + math.log(2), abs=1e-12)


def test_siglip_matches_naive_reference_and_is_symmetric():
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    s, b = torch.tensor(math.log(10.0), dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    loss = SigLipLoss()(img, txt, s, b)
    assert loss.item() == pytest.approx(_naive_siglip(img, txt, s, b), abs=1e-10)
    # swapping the towers transposes the logits and the labels are symmetric: the same loss
    assert SigLipLoss()(txt, img, s, b).item() == pytest.approx(loss.item(), abs=1e-12)
    # and for InfoNCE, whose two directions swap
    assert ClipLoss()(txt, img, s).item() == pytest.approx(ClipLoss()(img, txt, s).item(), abs=1e-12)


def test_siglip_perfect_symmetric_pairs_beat_shuffled():
    x = torch.eye(4, dtype=torch.float64)
    s, b = init_logit_params("siglip")
    matched = SigLipLoss()(x, x, s.double(), b.double())
    shuffled = SigLipLoss()(x, x.roll(1, 0), s.double(), b.double())
    assert matched.item() < shuffled.item()
    # matched, scale 10, bias -10: diagonal logit 0 → log 2 per row; off-diagonal logit -10 → log(1 + e^-10)
    assert matched.item() == pytest.approx(math.log(2) + 3 * math.log1p(math.exp(-10)), abs=1e-6)  # float32 init


@pytest.mark.parametrize("loss_kind", ["clip", "siglip"])
def test_temperature_is_clamped(loss_kind):
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    bias = torch.tensor(-1.0)
    fn = (lambda s: ClipLoss()(img, txt, s)) if loss_kind == "clip" else (lambda s: SigLipLoss()(img, txt, s, bias))
    high = torch.tensor(10.0, requires_grad=True)  # exp(10) ≈ 22026 → clamped to 100
    at_max = fn(torch.tensor(MAX_LOGIT_SCALE))
    loss = fn(high)
    assert loss.item() == pytest.approx(at_max.item(), rel=1e-6)
    loss.backward()
    assert high.grad.item() == 0.0  # above the clamp the temperature gets no gradient
    below = torch.tensor(1.0, requires_grad=True)
    fn(below).backward()
    assert below.grad.item() != 0.0
    assert MAX_LOGIT_SCALE == pytest.approx(math.log(100))


def test_init_logit_params():
    s, b = init_logit_params("clip")
    assert isinstance(s, nn.Parameter) and b is None
    assert s.item() == pytest.approx(math.log(1 / 0.07))
    s, b = init_logit_params("siglip")
    assert s.item() == pytest.approx(math.log(10)) and b.item() == -10.0
    assert s.requires_grad and b.requires_grad
    with pytest.raises(ValueError):
        init_logit_params("triplet")


def test_not_distributed_by_default():
    x = torch.randn(3, 2)
    assert not is_distributed()
    assert gather_features(x) is x
    # forcing the distributed path without a process group is the single-process loss (world of one)
    img, txt, s = torch.randn(5, 4), torch.randn(5, 4), torch.tensor(1.0)
    assert ClipLoss(distributed=True)(img, txt, s).item() == pytest.approx(ClipLoss()(img, txt, s).item(), abs=1e-6)
    grp = torch.tensor([0, 1, 0, 2, 2])
    assert ClipLoss(distributed=True)(img, txt, s, grp).item() == pytest.approx(
        ClipLoss()(img, txt, s, grp).item(), abs=1e-6)
    b = torch.tensor(-2.0)
    assert SigLipLoss(distributed=True)(img, txt, s, b).item() == pytest.approx(
        SigLipLoss()(img, txt, s, b).item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# distributed: 2 processes, gloo, DDP — against one process on the full batch

WORLD, PER_RANK, IN_IMG, IN_TXT, DIM = 2, 4, 6, 5, 3
GROUPS = [0, 1, 2, 0, 3, 4, 2, 5]  # group 0 within rank 0, group 2 across ranks 0 and 1
CASES = {
    "clip": {"kind": "clip", "local_loss": True, "groups": False},
    "clip_groups": {"kind": "clip", "local_loss": True, "groups": True},
    "clip_full": {"kind": "clip", "local_loss": False, "groups": False},
    "clip_full_groups": {"kind": "clip", "local_loss": False, "groups": True},
    "siglip": {"kind": "siglip", "groups": False},
}


class _Towers(nn.Module):
    """Two linear 'towers' and the loss's logit parameters, so gradients reach real parameters."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(IN_IMG, DIM).double()
        self.text = nn.Linear(IN_TXT, DIM).double()
        scale, bias = init_logit_params(kind)
        self.logit_scale = nn.Parameter(scale.detach().double() - 1.0)  # away from the clamp: a live gradient
        self.logit_bias = None if bias is None else nn.Parameter(bias.detach().double() + 8.0)

    def forward(self, x_img: torch.Tensor, x_txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(x_img), self.text(x_txt)


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    n = WORLD * PER_RANK
    return {"img": torch.randn(n, IN_IMG, generator=g, dtype=torch.float64),
            "txt": torch.randn(n, IN_TXT, generator=g, dtype=torch.float64),
            "groups": torch.tensor(GROUPS)}


def _step(model: nn.Module, params: nn.Module, case: dict, img, txt, groups) -> torch.Tensor:
    """Forward through ``model`` (plain or DDP), loss, backward; ``params`` holds the logit parameters."""
    fi, ft = model(img, txt)
    if case["kind"] == "clip":
        loss = ClipLoss(local_loss=case["local_loss"])(fi, ft, params.logit_scale, groups if case["groups"] else None)
    else:
        loss = SigLipLoss()(fi, ft, params.logit_scale, params.logit_bias)
    loss.backward()
    return loss.detach()


def _ddp_worker(rank: int, port: int, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        data = _batch()
        sl = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results: dict[str, dict] = {}
        for name, case in CASES.items():
            model = _Towers(case["kind"])
            ddp = DDP(model)
            loss = _step(ddp, model, case, data["img"][sl], data["txt"][sl], data["groups"][sl])
            results[name] = {"loss": loss, "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}
        # gather_features itself: rank order, and gradients summed over ranks onto each rank's own rows
        x = (torch.arange(6, dtype=torch.float64).reshape(3, 2) + 10 * rank).requires_grad_()
        y = gather_features(x)
        w = torch.arange(12, dtype=torch.float64).reshape(6, 2)  # the same on every rank
        (y * w).sum().backward()
        results["gather"] = {"y": y.detach(), "grad": x.grad.clone(), "distributed": is_distributed()}
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_distributed_loss_and_gradients_equal_single_process(ddp_results, name):
    case = CASES[name]
    data = _batch()
    model = _Towers(case["kind"])
    ref_loss = _step(model, model, case, data["img"], data["txt"], data["groups"])
    ref_grads = {n: p.grad for n, p in model.named_parameters()}
    losses = torch.stack([r[name]["loss"] for r in ddp_results])
    if case.get("local_loss", True):
        assert not torch.allclose(losses[0], losses[1])  # each rank holds its own rows' share
    assert losses.mean().item() == pytest.approx(ref_loss.item(), abs=1e-10)
    expected = {"logit_scale"} | ({"logit_bias"} if case["kind"] == "siglip" else set())
    assert expected <= set(ref_grads)
    for r, res in enumerate(ddp_results):
        assert set(res[name]["grads"]) == set(ref_grads)
        for n, g in ref_grads.items():
            assert g.abs().max() > 0, n
            torch.testing.assert_close(res[name]["grads"][n], g, atol=1e-10, rtol=1e-8, msg=f"rank {r} {n}")


@pytest.mark.slow
def test_gather_features_with_gradients(ddp_results):
    w = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    expected_y = torch.cat([torch.arange(6, dtype=torch.float64).reshape(3, 2) + 10 * r for r in range(WORLD)])
    for r, res in enumerate(ddp_results):
        assert res["gather"]["distributed"]
        torch.testing.assert_close(res["gather"]["y"], expected_y)
        # every rank's loss sends w[rows of r] to rank r: summed over the WORLD ranks
        torch.testing.assert_close(res["gather"]["grad"], WORLD * w[3 * r : 3 * (r + 1)])
