"""Why did this photo match? A heatmap of the regions that drove its similarity to a query.

Three methods, picked by the model's image tower:

* **Grad-CAM** (Selvaraju et al.) for convolutional towers (EfficientNet, ResNet, ConvNeXt …): the gradient of
  the query similarity with respect to the last feature map, averaged per channel, weights that map.
* **Gradient-weighted attention rollout** for ViT towers (timm ViTs, Hugging Face CLIP/SigLIP): attention
  rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers") with each layer's attention weighted
  by its positive gradient with respect to the query similarity (Chefer et al.), so the map depends on the
  query. ``method="rollout"`` gives the plain, query-independent rollout.
* **Occlusion** when torch is not available (the installer bundle runs models through ONNX Runtime only): grey
  out each cell of a grid and measure how much the similarity drops.

The map covers exactly what the model saw (the centre crop of the photo); :func:`render_overlay` draws it over
the whole photo and dims the parts outside the crop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from photosearch.model import torch_available
from photosearch.model.base import EncoderBase
from photosearch.model.config import PreprocessConfig
from photosearch.model.preprocess import ImageInput, crop_geometry, open_image, resize_crop, to_array
from photosearch.model.vectors import visual_space

log = logging.getLogger(__name__)

METHODS = ("auto", "grad-cam", "grad-rollout", "rollout", "occlusion")


class ExplainError(RuntimeError):
    """A heatmap that cannot be made for this model (with a message for the user)."""


@dataclass
class Heatmap:
    values: np.ndarray  # (h, w) float32 in [0, 1] over the model's input crop; 1 = drove the match most
    crop_box: tuple[float, float, float, float]  # the crop in the photo's own pixels (left, top, right, bottom)
    image_size: tuple[int, int]  # the photo's (width, height) after EXIF orientation
    method: str
    score: float  # cosine similarity of the photo and the query
    seconds: float

    def mass_in(self, box: tuple[float, float, float, float]) -> float:
        """Fraction of the heatmap's total mass inside ``box`` (in the photo's pixels)."""
        h, w = self.values.shape
        l0, t0, r0, b0 = self.crop_box
        xs = l0 + (np.arange(w) + 0.5) * (r0 - l0) / w
        ys = t0 + (np.arange(h) + 0.5) * (b0 - t0) / h
        inside = ((ys >= box[1]) & (ys < box[3]))[:, None] & ((xs >= box[0]) & (xs < box[2]))[None, :]
        total = float(self.values.sum())
        return float(self.values[inside].sum()) / total if total > 0 else 0.0


def crop_box(size: tuple[int, int], cfg: PreprocessConfig) -> tuple[float, float, float, float]:
    """Where :func:`photosearch.model.preprocess.resize_crop` crops, in the original image's pixels."""
    w, h = size
    if cfg.resize_mode == "squash":
        return 0.0, 0.0, float(w), float(h)
    nw, nh, left, top = crop_geometry(w, h, cfg)
    fx, fy = w / nw, h / nh
    return left * fx, top * fy, (left + cfg.size) * fx, (top + cfg.size) * fy


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, np.float32))
    m = m - m.min()
    top = float(m.max())
    return m / top if top > 0 else m


@dataclass
class TorchImageModel:
    """A torch module with ``encode_image`` (and, composed, ``image_tower``/``image_head``) on a device."""

    module: object
    device: object


def default_torch_loader(model: EncoderBase) -> Callable[[], object]:
    """How to get a torch model for heatmaps of ``model``'s checkpoint: the image half only for composed
    checkpoints (the text tower is never needed), the whole model otherwise."""
    path = model.info.path

    def load():
        if model.info.kind == "dual_encoder":
            import torch

            from photosearch.model.composed import load_image_side

            return TorchImageModel(load_image_side(path), torch.device("cpu"))
        from photosearch.model import load_model

        return load_model(path, device="cpu", image_backend="torch")

    return load


class Explainer:
    """Makes heatmaps for one model. ``torch_loader`` gives a torch-backed model for the same checkpoint when
    ``model`` itself runs without torch (ONNX-only; default: :func:`default_torch_loader`); it is called at most
    once, on first use."""

    def __init__(self, model: EncoderBase, torch_loader: Callable[[], object] | None = None):
        self.model = model
        self._torch_model = model if hasattr(model, "module") else None
        self._torch_loader = torch_loader or (None if self._torch_model is not None else default_torch_loader(model))

    def torch_model(self):
        if self._torch_model is None and self._torch_loader is not None and torch_available():
            t = time.perf_counter()
            self._torch_model = self._torch_loader()
            self._torch_loader = None
            log.info("torch model for heatmaps loaded in %.1fs", time.perf_counter() - t)
        return self._torch_model

    def method_for(self, method: str = "auto") -> str:
        if method not in METHODS:
            raise ExplainError(f"unknown heatmap method {method!r}; choose one of {', '.join(METHODS)}")
        if method == "occlusion":
            return method
        tm = self.torch_model()
        if tm is None:
            if method != "auto":
                raise ExplainError(f"the {method} heatmap needs PyTorch, which this build does not include")
            return "occlusion"
        kind = _tower_kind(tm.module)
        if method == "auto":
            return "grad-cam" if kind == "cnn" else "grad-rollout" if kind in ("timm-vit", "hf-vit") else "occlusion"
        if method == "grad-cam" and kind != "cnn":
            raise ExplainError("Grad-CAM needs a convolutional image tower; use grad-rollout for ViT towers")
        if method in ("grad-rollout", "rollout") and kind not in ("timm-vit", "hf-vit"):
            raise ExplainError(f"{method} needs a ViT image tower; use grad-cam for convolutional towers")
        return method

    def explain(self, image: ImageInput, query: np.ndarray, visual: np.ndarray | None = None,
                method: str = "auto") -> Heatmap:
        """Heatmap of ``image`` for a query vector (shared space, L2-normalised). ``visual``: the query photo's
        visual vector, for photo queries (the app ranks those by visual similarity)."""
        t = time.perf_counter()
        method = self.method_for(method)
        cfg = self.model.preprocess_config
        im = open_image(image, min_side=cfg.resize or cfg.size, background=tuple(cfg.background))
        # the draft-decoded image may be smaller than the file: report the crop in the decoded image's pixels,
        # scaled to the photo's own size (what a viewer shows)
        full = _full_size(image, im.size)
        box = crop_box(im.size, cfg)
        sx, sy = full[0] / im.size[0], full[1] / im.size[1]
        box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        pixels = to_array(resize_crop(im, cfg), cfg)
        q = np.asarray(query, np.float32).reshape(-1)
        if method == "occlusion":
            values, score = _occlusion(self.model, pixels, q, visual)
        else:
            values, score = _gradient_map(self.torch_model(), pixels, q, visual, method)
        return Heatmap(_normalise(values), box, full, method, float(score), time.perf_counter() - t)


def _full_size(image: ImageInput, decoded: tuple[int, int]) -> tuple[int, int]:
    """The photo's own (width, height) after EXIF orientation; ``decoded`` when it cannot be read cheaply."""
    if isinstance(image, Image.Image):
        return image.size
    import io

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a size for display only
        return decoded
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# -- torch methods -------------------------------------------------------------------------------------------
def _tower_kind(module) -> str:
    tower = getattr(module, "image_tower", None)
    if tower is not None:
        bb = tower.backbone
        blocks = getattr(bb, "blocks", None)
        if blocks is not None and len(blocks) and hasattr(blocks[0], "attn") and hasattr(bb, "patch_embed"):
            return "timm-vit"
        return "cnn"
    hf = getattr(module, "model", None)
    if hf is not None and hasattr(hf, "vision_model"):
        return "hf-vit"
    return "unknown"


def _target(emb, pooled, q, visual):
    import torch
    import torch.nn.functional as F

    if visual is not None and pooled is not None and pooled.shape[-1] == len(visual):
        # photo queries rank by visual_space (composed models: signed square root, then L2); the epsilon keeps
        # the gradient finite where a pooled feature is exactly 0
        p = pooled.float()
        p = torch.sign(p) * torch.sqrt(p.abs() + 1e-8)
        v = torch.from_numpy(visual_space(np.asarray(visual, np.float32)[None], "dual_encoder")[0])
        return (F.normalize(p, dim=-1) @ v).sum()
    return (F.normalize(emb.float(), dim=-1) @ torch.from_numpy(q)).sum()


def _gradient_map(tm: EncoderBase, pixels: np.ndarray, q: np.ndarray, visual: np.ndarray | None,
                  method: str) -> tuple[np.ndarray, float]:
    import torch

    module = tm.module
    x = torch.from_numpy(pixels[None]).to(tm.device)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            if method == "grad-cam":
                return _grad_cam(module, x, q, visual)
            if _tower_kind(module) == "timm-vit":
                return _timm_rollout(module, x, q, visual, weighted=method == "grad-rollout")
            return _hf_rollout(module, x, q, visual, weighted=method == "grad-rollout")
    finally:
        module.train(was_training)


IG_STEPS = 8  # integration steps of the CNN heatmap's channel weights


def _grad_cam(module, x, q, visual) -> tuple[np.ndarray, float]:
    import torch

    tower = module.image_tower
    bb = tower.backbone
    with torch.no_grad():  # the backbone runs once, without a graph: only the head needs gradients
        feats = bb.forward_features(x)  # (1, C, h, w)

    def score(f):
        pooled = bb.forward_head(f, pre_logits=True)  # (1, C)
        logits = bb.get_classifier()(pooled) if tower.cfg.num_classes else None
        return _target(module.image_head(pooled, logits), pooled, q, visual)

    # channel weights = gradients averaged along the path from zero features to the photo's (integrated
    # gradients over the cheap head only): a head that saturates — the bridge's softmax over ImageNet classes —
    # makes the single gradient at the photo point at whatever moves the softmax, not at what the score is made of
    grad = torch.zeros_like(feats)
    for alpha in (np.arange(IG_STEPS) + 0.5) / IG_STEPS:
        f = (feats * float(alpha)).requires_grad_(True)
        grad += torch.autograd.grad(score(f), f)[0]
    with torch.no_grad():
        target = score(feats)
    act = feats[0]  # (C, h, w)
    weights = grad[0].mean(dim=(1, 2)) / IG_STEPS  # (C,)
    cam = (weights[:, None, None] * act).sum(0).clamp(min=0)  # (h, w)
    return cam.cpu().numpy(), float(target)


def _rollout(attns: list, grads: list | None, prefix: int, cls_row: bool) -> np.ndarray:
    """Relevance of each patch token (the tokens after ``prefix``) for the output: rollout over layers,
    optionally gradient-weighted; the output is the class token's row, or the mean over patch rows when the
    model pools without one."""
    import torch

    n = attns[0].shape[-1]
    r = torch.eye(n)
    for i, a in enumerate(attns):
        a = a[0].detach().float().cpu()  # (H, T, T)
        if grads is not None:
            g = grads[i][0].detach().float().cpu()
            a = (a * g).clamp(min=0).mean(0)  # (T, T)
            r = r + a @ r
        else:
            a = a.mean(0)
            a = 0.5 * a + 0.5 * torch.eye(n)
            a = a / a.sum(-1, keepdim=True)
            r = a @ r
    rel = r[0, prefix:] if cls_row else r[prefix:, prefix:].mean(0)
    return rel.numpy()


def _timm_rollout(module, x, q, visual, weighted: bool) -> tuple[np.ndarray, float]:
    import torch

    tower = module.image_tower
    bb = tower.backbone
    captured: list = []
    hooks, fused = [], []
    for blk in bb.blocks:
        attn = blk.attn
        fused.append(getattr(attn, "fused_attn", False))
        attn.fused_attn = False  # materialise the attention matrix (the fused kernel never does)

        def keep(_m, _inp, out):
            captured.append(out)

        hooks.append(attn.attn_drop.register_forward_hook(keep))
    try:
        pooled, logits = tower(x)
        emb = module.image_head(pooled, logits)
        target = _target(emb, pooled, q, visual)
        # gradients with respect to the attention maps only (no weight gradients are computed)
        grads = list(torch.autograd.grad(target, captured)) if weighted and captured else None
    finally:
        for h in hooks:
            h.remove()
        for blk, f in zip(bb.blocks, fused):
            blk.attn.fused_attn = f
    if len(captured) != len(bb.blocks):
        raise ExplainError("this ViT's attention blocks cannot be traced for a heatmap")
    prefix = int(getattr(bb, "num_prefix_tokens", 1))
    cls_row = prefix > 0 and getattr(bb, "global_pool", "token") == "token"
    rel = _rollout(captured, grads, prefix, cls_row)
    gh, gw = bb.patch_embed.grid_size
    return rel.reshape(gh, gw), float(target.detach())


def _hf_rollout(module, x, q, visual, weighted: bool) -> tuple[np.ndarray, float]:
    import torch

    hf = module.model
    vm = hf.vision_model
    previous = getattr(hf.config, "_attn_implementation", None)
    try:
        hf.set_attn_implementation("eager")
    except Exception:  # noqa: BLE001 - older transformers: set the config field
        hf.config._attn_implementation = "eager"
        hf.config.vision_config._attn_implementation = "eager"
    try:
        out = vm(pixel_values=x, output_attentions=True)
        attns = list(out.attentions or ())
        if not attns:
            raise ExplainError("this model does not expose its attention maps")
        pooled = out.pooler_output
        emb = hf.visual_projection(pooled) if hasattr(hf, "visual_projection") else pooled
        target = _target(emb, None, q, None)
        grads = list(torch.autograd.grad(target, attns)) if weighted else None
    finally:
        if previous is not None:
            try:
                hf.set_attn_implementation(previous)
            except Exception:  # noqa: BLE001
                hf.config._attn_implementation = previous
    tokens = attns[0].shape[-1]
    side = round((tokens - 1) ** 0.5)
    prefix = 1 if side * side == tokens - 1 else 0  # CLIP has a class token; SigLIP pools with attention instead
    side = side if prefix else round(tokens ** 0.5)
    rel = _rollout(attns, grads, prefix, cls_row=prefix == 1)
    return rel.reshape(side, side), float(target.detach())


# -- occlusion (no torch) ------------------------------------------------------------------------------------
OCCLUSION_GRID = 8


def _occlusion(model: EncoderBase, pixels: np.ndarray, q: np.ndarray, visual: np.ndarray | None,
               grid: int = OCCLUSION_GRID) -> tuple[np.ndarray, float]:
    """Similarity drop when each of grid×grid cells is replaced by the mean colour (0 after normalisation)."""
    _, h, w = pixels.shape
    batch = [pixels]
    cells = []
    for gy in range(grid):
        for gx in range(grid):
            y0, y1 = gy * h // grid, (gy + 1) * h // grid
            x0, x1 = gx * w // grid, (gx + 1) * w // grid
            p = pixels.copy()
            p[:, y0:y1, x0:x1] = 0.0
            batch.append(p)
            cells.append((gy, gx))
    kind = model.info.kind
    target = None if visual is None else visual_space(np.asarray(visual)[None], kind)[0]  # as photo queries rank
    scores = []
    for i in range(0, len(batch), 32):
        emb, vis = model.encode_pixels(np.stack(batch[i:i + 32]))
        if target is not None and vis.shape[1] == len(target):
            scores.append(visual_space(vis, kind) @ target)
        else:
            scores.append(emb @ q)
    s = np.concatenate(scores)
    base = float(s[0])
    out = np.zeros((grid, grid), np.float32)
    for (gy, gx), v in zip(cells, s[1:]):
        out[gy, gx] = max(0.0, base - float(v))
    return out, base


# -- drawing -------------------------------------------------------------------------------------------------
def _colormap(v: np.ndarray) -> np.ndarray:
    """[0, 1] → RGB uint8 through a perceptual dark-blue → magenta → yellow ramp (inferno-like)."""
    stops = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                      [250, 193, 39], [252, 255, 164]], np.float32)
    x = np.clip(v, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(np.int32), len(stops) - 2)
    f = (x - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def render_overlay(image: Image.Image, hm: Heatmap, alpha: float = 0.7, max_side: int | None = None) -> Image.Image:
    """The photo with the heatmap blended over the part the model saw; the rest is dimmed."""
    im = image.convert("RGB")
    if max_side and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    fx, fy = im.size[0] / hm.image_size[0], im.size[1] / hm.image_size[1]
    l0, t0, r0, b0 = hm.crop_box
    box = (round(l0 * fx), round(t0 * fy), round(r0 * fx), round(b0 * fy))
    bw, bh = max(1, box[2] - box[0]), max(1, box[3] - box[1])
    heat = Image.fromarray((hm.values * 255).astype(np.uint8)).resize((bw, bh), Image.Resampling.BICUBIC)
    hv = np.asarray(heat, np.float32) / 255.0
    colour = _colormap(hv).astype(np.float32)
    base = np.asarray(im, np.float32)
    out = base * 0.45  # outside the crop: dimmed
    region = base[box[1]:box[1] + bh, box[0]:box[0] + bw]
    a = alpha * np.sqrt(hv[: region.shape[0], : region.shape[1], None])  # cold regions stay visible
    out[box[1]:box[1] + bh, box[0]:box[0] + bw] = region * (1 - a) + colour[: region.shape[0], : region.shape[1]] * a
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
