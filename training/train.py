"""``python -m training train --config FILE [--resume] [--set key=value ...] [--section.key VALUE ...]``.

Loads a YAML/TOML config (see :mod:`training.config` and the README), applies the overrides, saves the resolved
config into ``output.dir`` and runs the engine (under ``torchrun`` on several processes when launched by it). A config
with ``kind = "default"`` runs the shipped default model's own pipeline instead (``training/recipes/default.toml``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from photosearch.model.errors import ModelError
from training.config import ConfigError, DefaultSection, TrainConfig, dumps, format_of, load_config, split_cli_overrides
from training.data.captions import DatasetError

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def default_pipeline_args(section: DefaultSection):
    """(Options, out folder | None, report folder) for ``training.default_model.run``, built exactly as
    ``python -m training default`` builds them from its command line."""
    from training.default_model import Options
    from training.heads import HeadTrainConfig

    opts = Options(seed=section.seed, views=section.views, wise_alpha=section.wise_alpha, heads=HeadTrainConfig(
        epochs=section.epochs, lr=section.lr, l2sp=section.l2sp, batch_size=section.batch_size, seed=section.seed))
    out = REPO / section.out if not Path(section.out).is_absolute() else Path(section.out)
    report = REPO / section.report if not Path(section.report).is_absolute() else Path(section.report)
    return opts, (out if section.export else None), report


def run_config(cfg: TrainConfig, *, resume: bool = False, config_source: str | None = None) -> dict:
    if cfg.kind == "default":
        from training.default_model import run

        opts, out, report = default_pipeline_args(cfg.default)
        return run(opts, out, report)
    from training.engine import train

    return train(cfg, resume=resume, config_source=config_source)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training train",
        description="Train a model from a YAML/TOML config. Override any key: --set optim.lr=1e-4 data.batch_size=64, "
                    "or --optim.lr 1e-4. Multi-GPU: torchrun --nproc_per_node N -m training train --config FILE.")
    ap.add_argument("--config", type=Path, help="a .toml or .yaml config (e.g. training/recipes/heads-cached.toml)")
    ap.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output.dir")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args, rest = ap.parse_known_args(argv)
    try:
        cfg = load_config(args.config, split_cli_overrides(rest))
        if args.print_config:
            print(dumps(cfg, format_of(args.config)), end="")
            return 0
        result = run_config(cfg, resume=args.resume, config_source=str(args.config) if args.config else None)
    except (ConfigError, DatasetError, ModelError) as e:  # a config, dataset or model that cannot be used as given
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = ("conse", "trained", "epochs", "total_seconds") if cfg.kind == "default" else (
        "output", "steps", "finished", "metrics", "report")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=1, default=str))
    return 0
