"""``python -m training export RUN_DIR``: turn a training run into a model folder the app loads and lists.

The run's resolved config rebuilds the model, the newest training checkpoint (or ``--checkpoint``) fills in the
weights, and the model is written to ``user_models_dir()/NAME`` (``$PHOTOSEARCH_MODELS`` overrides the root;
``--out DIR`` writes elsewhere):

- composed models → a photosearch checkpoint (config.json + model.safetensors). Heads-only runs on packaged
  backbones store just the heads and keep referring to the hash-verified backbone packages; every other run stores
  the towers too, and the tokenizer goes into the folder, so the export stands alone;
- Hugging Face CLIP/SigLIP fine-tunes → a ``save_pretrained`` folder (safetensors) with tokenizer and image
  processor config.

The app's settings list every folder under ``user_models_dir()`` (:func:`photosearch.model.installed_models`);
``photosearch --model NAME`` and ``load_model(NAME)`` find it by name.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.config import ConfigError, load_config, resolved_config_path
from training.engine import latest_checkpoint, load_checkpoint, load_tower_states
from training.models import build_model

log = logging.getLogger(__name__)


def export_run(run_dir: str | Path, name: str | None = None, out: str | Path | None = None,
               checkpoint: str | Path | None = None) -> Path:
    """Export a run's trained model; returns the model folder."""
    import torch

    from photosearch.model import user_models_dir

    run_dir = Path(run_dir)
    cfg = load_config(resolved_config_path(run_dir))
    ck_path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if ck_path is None or not ck_path.is_file():
        raise ConfigError(f"{run_dir} has no training checkpoint (checkpoints/step-*.pt): has the run trained yet?")
    ck = load_checkpoint(ck_path)
    mode = ck.get("mode", cfg.train.mode)
    torch.manual_seed(cfg.train.seed)
    built = build_model(cfg.model, mode, cfg.train.loss)
    target = built.module.heads() if mode == "heads" else built.module
    target.load_state_dict(ck["model"])
    load_tower_states(built.module, ck)
    name = name or cfg.output.name or run_dir.resolve().name
    dest = Path(out) if out else user_models_dir() / name
    summary = _summary(run_dir)
    training: dict[str, Any] = {
        "recipe": "python -m training train", "mode": mode, "seed": cfg.train.seed, "epochs": ck.get("epoch"),
        "steps": ck.get("step"), "checkpoint": ck_path.name, "data": cfg.data.annotations or cfg.data.format,
        "metrics": summary.get("metrics", {}), "config": cfg.to_dict(),
    }
    include_towers = mode != "heads" or _has_local_sources(built.module)
    built.module.eval()
    built.module.export(dest, built.tokenize, include_towers, training)
    log.info("exported %s (%s mode, step %s) to %s", run_dir, mode, ck.get("step"), dest)
    return dest


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _has_local_sources(module) -> bool:
    """Composed towers whose weights come from a user's file (not a package): exported inside the checkpoint."""
    cfg = getattr(module, "cfg", None)
    if cfg is None:
        return False
    return any(src is not None and src.kind == "path" for src in (cfg.image.weights, cfg.text.weights))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training export",
                                 description="Write a training run's model where the app finds it.")
    ap.add_argument("run_dir", type=Path, help="the run's output folder (output.dir)")
    ap.add_argument("--name", help="model name (default: output.name, else the run folder's name)")
    ap.add_argument("--out", type=Path, help="write the model folder here instead of the app's models folder")
    ap.add_argument("--checkpoint", type=Path, help="a training checkpoint (default: the newest in RUN_DIR)")
    args = ap.parse_args(argv)
    from photosearch.model.errors import ModelError

    try:
        dest = export_run(args.run_dir, args.name, args.out, args.checkpoint)
    except (ConfigError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from photosearch.model import load_model

    model = load_model(dest, device="cpu", image_backend="torch")
    print(f"exported {dest} (model id {model.model_id}, {model.embed_dim}-d); pick it in photosearch's settings or "
          f"run `photosearch --model {dest.name if dest.parent.resolve() == _models_root() else dest}`")
    return 0


def _models_root() -> Path:
    from photosearch.model import user_models_dir

    return user_models_dir().resolve()
