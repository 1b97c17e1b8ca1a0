"""What a training run records: ``metrics.jsonl`` (always), TensorBoard event files (when the ``tensorboard``
package is installed), and at the end a Markdown report with plots."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
RECALL_KEYS = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10")


class MetricsLog:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Records: every ``train.log_every`` steps ``{"type": "train", "step", "epoch", "loss", "lr", "temperature"}``;
    after every epoch ``{"type": "epoch", "step", "epoch", "train_loss", "lr", "temperature", <metric>: value}``
    with the metrics of the epochs that were evaluated (``t2i_R@K``, ``i2t_R@K``, ``zero_shot``). TensorBoard gets
    ``train/loss``, ``train/lr``, ``train/temperature``, ``train/train_loss`` (epoch mean) and ``eval/<metric>``.
    Resuming from step S drops records after S first (they are about to be recomputed) and tells TensorBoard to
    purge them too.
    """

    def __init__(self, folder: Path, tensorboard: bool, resume_step: int | None = None):
        self.folder = folder
        self.path = folder / METRICS_FILE
        folder.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.is_file():
            keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        self._file = self.path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=resume_step)
            except ImportError:
                log.warning("the tensorboard package is not installed (pip install -e '.[train]'); logging to %s only",
                            self.path)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.writer is not None:
            skip = ("type", "step", "epoch") + (("lr", "temperature") if record.get("type") == "epoch" else ())
            for k, v in record.items():
                if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool):
                    prefix = "train" if record.get("type") == "train" or k == "train_loss" else "eval"
                    self.writer.add_scalar(f"{prefix}/{k}", v, record["step"])
            self.writer.flush()

    def close(self) -> None:
        self._file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
    return out


def _plot(path: Path, records: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("type") == "train"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    evals = [r for r in epochs if "t2i_R@1" in r or "zero_shot" in r]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], marker=".", label="logged steps", alpha=0.6)
    axes[0].plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs], marker="o", label="epoch mean")
    axes[0].legend(fontsize=7)
    axes[0].set_xlabel("optimizer step")
    axes[0].set_title("training loss")
    points = sorted({r["step"]: r for r in train + epochs if "lr" in r}.values(), key=lambda r: r["step"])
    steps = [r["step"] for r in points]
    axes[1].plot(steps, [r["lr"] for r in points], marker=".", color="tab:orange", label="learning rate")
    axes[1].set_xlabel("optimizer step (lr: learning rate applied in that step)")
    axes[1].set_title("learning rate (orange) / temperature (green)")
    twin = axes[1].twinx()
    twin.plot(steps, [r["temperature"] for r in points], marker=".", color="tab:green", label="temperature")
    for k in RECALL_KEYS + ("zero_shot",):
        if evals and k in evals[0]:
            axes[2].plot([r["epoch"] for r in evals], [r[k] for r in evals], marker="o", label=k)
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("%")
    axes[2].set_title("evaluation: Recall@K and zero-shot accuracy")
    if evals:
        axes[2].legend(fontsize=7, ncol=2)
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(folder: Path, summary: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """``folder/README.md`` + ``training.png``: the run's setup, final metrics, and curves."""
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{summary.get('model', {}).get('name') or summary.get('model', {}).get('kind', 'model')}: " \
            f"{summary['mode']} training"
    _plot(folder / "training.png", records, title)
    epochs = [r for r in records if r.get("type") == "epoch"]
    keys = [k for k in RECALL_KEYS + ("zero_shot",) if any(k in r for r in epochs)]
    s = summary
    lines = [
        f"# Training report — {title}",
        "",
        (f"Produced by `python -m training train{' --config ' + s['config_source'] if s.get('config_source') else ''}"
         "`; the resolved config (every key) is `../config.toml` (or `.yaml`) beside this folder."),
        "",
        f"- mode: **{s['mode']}** — trained: {', '.join(s.get('trained', []))}",
        f"- model: `{json.dumps(s.get('model', {}))}`",
        (f"- data: {s.get('train_photos', '?')} training photos, {s.get('eval_photos', 0)} evaluation photos "
         f"({s.get('eval_captions', 0)} captions)"),
        (f"- {s.get('epochs_done', '?')} epochs, {s.get('steps', '?')} optimizer steps, global batch "
         f"{s.get('global_batch', '?')} ({s.get('world_size', 1)} process(es) × {s.get('batch_size', '?')} × "
         f"{s.get('grad_accum', 1)} accumulation), precision {s.get('precision', '?')}, seed {s.get('seed', '?')}"),
        f"- wall time {s.get('seconds', 0):.1f} s",
    ]
    if epochs:
        lines.append(f"- mean training loss per epoch: {epochs[0]['train_loss']:.4f} (epoch {epochs[0]['epoch']}) → "
                     f"{epochs[-1]['train_loss']:.4f} (epoch {epochs[-1]['epoch']})")
    lines.append("")
    if epochs:
        lines += [
            ("Recall@K in % on the evaluation photos (every caption is a text→image query; an image→text query "
             "hits when any of the photo's captions ranks in the top K); zero-shot: top-1 accuracy in % on the "
             "class folder. \"-\": not evaluated that epoch."),
            "",
            "| epoch | train loss | " + " | ".join(keys) + " |",
            "|---|---|" + "---|" * len(keys),
        ]
        for r in epochs:
            lines.append(f"| {r['epoch']} | {r['train_loss']:.4f} | " + " | ".join(_fmt(r.get(k)) for k in keys)
                         + " |")
        lines.append("")
    lines += ["![training curves](training.png)", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"
