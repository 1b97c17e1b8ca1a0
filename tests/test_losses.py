"""Contrastive losses: known values, temperature clamping, symmetry, and distributed (2 gloo processes under DDP)
equal to one process on the full batch — loss and every parameter gradient, logit scale and bias included."""

from __future__ import annotations

import math
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


def _ddp_worker(rank: int, store: str, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    # rendezvous through a file (no port to race for); gloo then talks over the loopback interface
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
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


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_worker, args=(str(out / "store"), str(out)), nprocs=WORLD, join=True)
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


# ---------------------------------------------------------------------------------------------------------------
# the heads trainer consumes ClipLoss: its fast paths must give bit-identical heads (the shipped default model is
# reproduced bit for bit by `python -m training default`)


def _reference_train_heads(heads, data, cfg, evaluate=None):
    """training.heads.train_heads as it was before its speed-ups (advanced indexing, per-photo caption draws,
    L2-SP through autograd): the bit-for-bit reference."""
    import numpy as np

    from training.heads import _lr_at

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    loss_fn = ClipLoss()
    init = {n: p.detach().clone() for n, p in heads.named_parameters()}
    decay = [p for n, p in heads.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in heads.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    pooled = torch.from_numpy(np.asarray(data.pooled, dtype=np.float32))
    logits = torch.from_numpy(np.asarray(data.logits, dtype=np.float32))
    text = torch.from_numpy(np.asarray(data.text, dtype=np.float32))
    groups = torch.from_numpy(np.asarray(data.groups))
    n_views, n = pooled.shape[:2]
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total, step, losses = cfg.epochs * steps_per_epoch, 0, []
    for _ in range(cfg.epochs):
        heads.train()
        order = rng.permutation(n)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            if cfg.clean_fraction is None or n_views == 1:
                views = torch.from_numpy(rng.integers(0, n_views, len(idx)))
            else:
                augmented = rng.integers(1, n_views, len(idx))
                views = torch.from_numpy(np.where(rng.random(len(idx)) < cfg.clean_fraction, 0, augmented))
            caps = torch.tensor([data.captions_of[i][rng.integers(len(data.captions_of[i]))] for i in idx])
            idx_t = torch.from_numpy(idx)
            loss = loss_fn(heads.image(pooled[views, idx_t], logits[views, idx_t]), heads.text(text[caps]),
                           heads.logit_scale, groups[idx_t])
            loss = loss + cfg.l2sp * sum(((p - init[name]) ** 2).sum() for name, p in heads.named_parameters()
                                         if p.requires_grad and name != "logit_scale")
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, cfg.warmup_epochs * steps_per_epoch, cfg.lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        if evaluate is not None:
            heads.eval()
            evaluate(heads)
    return losses


def _tiny_heads(seed: int = 0):
    from photosearch.model.config import HeadConfig
    from photosearch.model.towers import build_head
    from training.heads import Heads

    torch.manual_seed(seed)
    image = build_head(HeadConfig(type="bridge", in_dim=24, out_dim=8, top_k=3, temperature=1.0, dropout=0.5), 12)
    text = build_head(HeadConfig(type="linear", in_dim=8, out_dim=8))
    with torch.no_grad():
        image.class_text.copy_(F.normalize(torch.randn(12, 8), dim=-1))
        image.residual.weight.normal_(0, 0.05)
    return Heads(image, text, nn.Parameter(torch.tensor(math.log(1 / 0.07))))


def _tiny_pairs(tmp_path: Path | None):
    import numpy as np

    from training.heads import CachedPairs

    rng = np.random.default_rng(5)
    v, n, t = 3, 70, 110
    pooled = np.abs(rng.standard_normal((v, n, 24))).astype(np.float16)
    logits = (3 * rng.standard_normal((v, n, 12))).astype(np.float16)
    text = rng.standard_normal((t, 8)).astype(np.float32)
    if tmp_path is not None:  # memory-mapped float16, as training.features.FeatureCache returns the cache
        for name, a in (("pooled", pooled), ("logits", logits), ("text", text)):
            np.save(tmp_path / f"{name}.npy", a)
        pooled, logits, text = (np.load(tmp_path / f"{k}.npy", mmap_mode="r") for k in ("pooled", "logits", "text"))
    else:  # float32 in memory, as the default recipe passes them
        pooled, logits = pooled.astype(np.float32), logits.astype(np.float32)
    captions_of = [sorted(rng.choice(t, int(rng.integers(1, 4)), replace=False).tolist()) for _ in range(n)]
    groups = rng.integers(0, 55, n)
    return CachedPairs(pooled=pooled, logits=logits, text=text, captions_of=captions_of, groups=groups)


@pytest.mark.parametrize(("clean_fraction", "memmap", "batch_size"),
                         [(None, False, 16), (0.5, False, 16), (None, True, 16), (0.5, True, 23)])
def test_train_heads_is_bit_identical_to_the_reference(tmp_path, clean_fraction, memmap, batch_size):
    """70 photos: batch 16 ends on a batch of 6; batch 23 on a batch of 1, which is skipped."""
    from training import heads as heads_mod
    from training.heads import HeadTrainConfig, train_heads

    cfg = HeadTrainConfig(epochs=3, batch_size=batch_size, lr=3e-3, l2sp=0.1, warmup_epochs=1, seed=7,
                          clean_fraction=clean_fraction)
    def evaluate(h):  # an evaluation that draws random numbers: masks drawn ahead across epochs would shift them
        draws.append(torch.rand(4))
        return {}

    draws: list[torch.Tensor] = []
    ref = _tiny_heads()
    ref_losses = _reference_train_heads(ref, _tiny_pairs(None), cfg, evaluate)
    ref_rng, ref_draws, draws = torch.get_rng_state(), draws, []
    fast = _tiny_heads()
    probe = heads_mod._DropoutAhead.attach(fast)
    assert probe is not None  # these heads get their masks drawn ahead
    probe.close()
    hist = train_heads(fast, _tiny_pairs(tmp_path if memmap else None), cfg, evaluate)
    for (name, a), b in zip(ref.state_dict().items(), fast.state_dict().values()):
        assert torch.equal(a, b), name
    # nothing drawn ahead across an epoch's end (the evaluation draws the same numbers) nor past the end
    assert all(torch.equal(a, b) for a, b in zip(draws, ref_draws)) and len(draws) == 3
    assert torch.equal(torch.get_rng_state(), ref_rng)
    assert all("forward" not in m.__dict__ for m in fast.modules())  # dropout modules restored
    steps = 70 // batch_size if 70 % batch_size < 2 else math.ceil(70 / batch_size)
    assert hist.loss == pytest.approx([sum(ref_losses[e * steps : (e + 1) * steps]) / steps for e in range(3)],
                                      rel=1e-12)
    assert len(hist.epoch_seconds) == 3 and all(s > 0 for s in hist.epoch_seconds)


def test_l2sp_gradient_equals_autograd_bitwise():
    from training.heads import _add_l2sp_grad

    g = torch.Generator().manual_seed(9)
    params = [nn.Parameter(torch.randn(37, 19, generator=g) * 1e-3), nn.Parameter(torch.randn(19, generator=g))]
    init = {str(i): p.detach() + torch.randn(p.shape, generator=g) * 1e-3 for i, p in enumerate(params)}
    w = [torch.randn(p.shape, generator=g) for p in params]

    def loss_path():
        return sum((p * wi).sin().sum() for p, wi in zip(params, w))

    loss = loss_path() + 0.1 * sum(((p - init[str(i)]) ** 2).sum() for i, p in enumerate(params))
    loss.backward()
    expected = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    base = loss_path()
    base.backward()
    value = base.detach() + _add_l2sp_grad([(str(i), p) for i, p in enumerate(params)], init, 0.1)
    assert value.item() == loss.item()
    for p, e in zip(params, expected):
        assert torch.equal(p.grad, e)
