"""Models as data: presets adjusted by config keys, tower blocks for partial unfreezing, optimizer groups, schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.test_train_fixtures import write_jsonl, write_tokenizer
from training.config import ConfigError, ModelSection, load_config
from training.engine import checkpoints, cosine_with_warmup, load_checkpoint, param_groups, train
from training.models import build_model, configure_trainable, find_blocks, freeze_eval


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.mark.parametrize("arch, attr, n", [("test_vit", "blocks", None), ("test_resnet", "layer4", 4),
                                           ("test_convnext", "stages", None), ("test_efficientnet", "blocks", None)])
def test_blocks_of_timm_towers(arch, attr, n):
    import timm

    m = timm.create_model(arch, pretrained=False, num_classes=0)
    blocks, tail = find_blocks(m)
    if n is None:
        assert blocks == list(getattr(m, attr))
    else:
        assert len(blocks) == n and blocks[-1] is getattr(m, attr)
    names = [name for name, child in m.named_children() if any(child is t for t in tail)]
    assert "blocks" not in names and "stages" not in names and "layer4" not in names
    assert {"norm", "conv_head", "head", "fc"} & set(names) or arch == "test_convnext"


@pytest.mark.parametrize("cfg", [
    {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
     "intermediate_size": 64, "vocab_size": 99},
    {"model_type": "distilbert", "dim": 32, "n_layers": 3, "n_heads": 2, "hidden_dim": 64, "vocab_size": 99},
])
def test_blocks_of_transformers_towers(cfg):
    from transformers import AutoConfig, AutoModel

    cfg = dict(cfg)
    m = AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    blocks, _ = find_blocks(m)
    assert len(blocks) == 3 and type(blocks[0]).__name__ in ("BertLayer", "TransformerBlock")


def test_preset_adjusted_key_by_key(tok, tmp_path):
    """Another timm tower, a random-init DistilBERT, MLP heads, another width and image size: all from config."""
    built = build_model(ModelSection(
        preset="tiny", tokenizer=str(tok), image_arch="test_convnext", text_config={
            "model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "vocab_size": 128},
        head="mlp", head_hidden=48, embed_dim=24, image_size=48), "heads")
    cfg = built.module.cfg
    assert (cfg.image.arch, cfg.image.feature_dim, cfg.image.num_classes) == ("test_convnext", 64, 0)
    assert cfg.text.hf_config["model_type"] == "distilbert" and cfg.text.feature_dim == 32
    assert (cfg.image_head.type, cfg.image_head.in_dim, cfg.image_head.out_dim, cfg.image_head.hidden_dim) == (
        "mlp", 64, 24, 48)
    assert built.preprocess.size == 48
    with torch.no_grad():
        img, txt = built.module(torch.randn(2, 3, 48, 48), built.tokenize(["a red cat", "a dog"]))
    assert img.shape == txt.shape == (2, 24)
    with pytest.raises(ConfigError, match="unknown model.preset 'nope'.*tiny-vit"):
        build_model(ModelSection(preset="nope"), "heads")
    with pytest.raises(ConfigError, match="set model.tokenizer"):
        build_model(ModelSection(preset="tiny"), "heads")


def test_local_pretrained_towers_load_and_export_standing_alone(tok, tmp_path, monkeypatch):
    """image_weights / text_model point at local files: the towers start from them, and a heads-only export
    carries the towers (a user's files may move; the app must not depend on them)."""
    import timm
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    bert = BertModel(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64))
    bert.save_pretrained(str(tmp_path / "bert"))
    for f in tok.iterdir():
        (tmp_path / "bert" / f.name).write_bytes(f.read_bytes())
    section = ModelSection(preset="tiny-vit", image_weights=str(tmp_path / "vit.safetensors"),
                           text_model=str(tmp_path / "bert"))
    built = build_model(section, "heads")
    m = built.module
    assert all(torch.equal(v, vit.state_dict()[k]) for k, v in m.dual.image_tower.backbone.state_dict().items())
    assert torch.equal(m.dual.text_tower.encoder.embeddings.word_embeddings.weight,
                       bert.embeddings.word_embeddings.weight)
    assert m.cfg.text.weights.kind == "path" and m.cfg.text.feature_dim == 32
    # train a few heads steps on it and export: the folder loads after the source files are gone
    photos = write_jsonl(tmp_path / "data", 16)
    cfg = load_config(None, ["model.preset=tiny-vit", f"model.image_weights={tmp_path / 'vit.safetensors'}",
                             f"model.text_model={tmp_path / 'bert'}", f"data.annotations={photos}",
                             f"data.images={photos.parent / 'images'}", "data.batch_size=4", "train.epochs=1",
                             "data.views=1", f"data.cache_dir={tmp_path / 'cache'}", f"output.dir={tmp_path / 'run'}",
                             "output.report=false", "output.tensorboard=false"])
    train(cfg)
    from training.export import export_run

    out = export_run(tmp_path / "run", out=tmp_path / "exported")
    saved = json.loads((out / "config.json").read_text())
    assert saved["image"]["weights"] is None and saved["text"]["weights"] is None
    (tmp_path / "vit.safetensors").unlink()
    for f in (tmp_path / "bert").iterdir():
        f.unlink()
    monkeypatch.setenv("PHOTOSEARCH_CACHE", str(tmp_path / "onnx"))
    from photosearch.model import load_model

    model = load_model(out, device="cpu", image_backend="torch")
    assert model.encode_texts(["a red cat"]).shape == (1, 32)


def test_partial_unfreezing_trains_only_the_last_blocks(tok, tmp_path):
    """tiny-resnet (BatchNorm) in partial mode with gradient checkpointing: the last image block and text layer
    change, the earlier ones and their BatchNorm statistics stay exactly as they were."""
    photos = write_jsonl(tmp_path / "data", 16)
    cfg = load_config(None, ["model.preset=tiny-resnet", f"model.tokenizer={tok}", f"data.annotations={photos}",
                             f"data.images={photos.parent / 'images'}", "data.batch_size=8", "train.epochs=1",
                             "data.eval_fraction=0", "train.mode=partial", "train.unfreeze_image_blocks=1",
                             "train.unfreeze_text_blocks=1", "train.grad_checkpointing=true", "optim.lr=1e-2",
                             f"output.dir={tmp_path / 'run'}", "output.report=false", "output.tensorboard=false"])
    torch.manual_seed(cfg.train.seed)  # the engine's initial (random) weights
    before = build_model(cfg.model, "partial").module.state_dict()
    train(cfg)
    after = load_checkpoint(checkpoints(tmp_path / "run")[-1])["model"]
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    img, txt = "dual.image_tower.backbone.", "dual.text_tower.encoder."
    assert any(k.startswith(img + "layer4.") for k in changed)
    assert any(k.startswith(txt + "encoder.layer.1.") for k in changed)
    assert not any(k.startswith((img + "layer1.", img + "layer3.", img + "conv1", img + "bn1")) for k in changed)
    assert not any(k.startswith((txt + "encoder.layer.0.", txt + "embeddings.", txt + "pooler.")) for k in changed)
    assert any(k.startswith("dual.image_head.") for k in changed) and "dual.logit_scale" in changed


def test_trainable_sets_per_mode_and_frozen_parts_in_eval(tok):
    built = build_model(ModelSection(preset="tiny-vit", tokenizer=str(tok)), "partial")
    m = built.module
    total = sum(p.numel() for p in m.parameters())

    def trainable():
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    configure_trainable(m, "heads")
    heads = trainable()
    configure_trainable(m, "partial", 1, 0)
    partial = trainable()
    configure_trainable(m, "full")
    full = trainable()
    assert heads < partial < full and full == total - sum(p.numel() for p in m.dual.text_tower.encoder.pooler
                                                          .parameters())
    with pytest.raises(ConfigError, match="unfreeze_image_blocks = 99"):
        configure_trainable(m, "partial", 99, 0)
    configure_trainable(m, "partial", 1, 0)
    m.train()
    freeze_eval(m)
    assert not m.dual.image_tower.backbone.blocks[0].training and m.dual.image_tower.backbone.blocks[-1].training
    assert not m.dual.text_tower.encoder.training


def test_no_weight_decay_on_norms_biases_and_temperature(tok):
    built = build_model(ModelSection(preset="tiny-vit", tokenizer=str(tok)), "full")
    m = built.module
    configure_trainable(m, "full")
    groups = param_groups(m, {id(p) for p in m.heads().parameters()}, lr=1e-3, weight_decay=0.2, tower_lr_scale=0.1)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"heads/decay", "heads/no_decay", "towers/decay", "towers/no_decay"}
    assert by_name["towers/decay"]["lr"] == pytest.approx(1e-4) and by_name["heads/decay"]["lr"] == 1e-3
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    named = dict(m.named_parameters())
    assert id(m.logit_scale) in no_decay
    for name, p in named.items():
        if not p.requires_grad:
            continue
        if name.endswith(".bias") or "norm" in name.split(".")[-2]:
            assert id(p) in no_decay, name
        if p.ndim >= 2:
            assert id(p) not in no_decay, name


def test_cosine_schedule_with_warmup():
    f = cosine_with_warmup(total=100, warmup=10, min_ratio=0.1)
    assert [round(f(s), 3) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(99) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert all(f(s) >= f(s + 1) for s in range(10, 99))


def test_bf16_autocast_trains(tok, tmp_path):
    """The mixed-precision path (bf16 autocast; on GPUs it is the default) runs and learns on a CPU too."""
    photos = write_jsonl(tmp_path / "data", 16)
    cfg = load_config(None, ["model.preset=tiny-vit", f"model.tokenizer={tok}", f"data.annotations={photos}",
                             f"data.images={photos.parent / 'images'}", "data.batch_size=8", "train.epochs=3",
                             "data.eval_fraction=0.25", "train.mode=full", "train.precision=bf16", "optim.lr=2e-3",
                             f"output.dir={tmp_path / 'run'}", "output.report=false", "output.tensorboard=false"])
    summary = train(cfg)
    assert summary["precision"] == "bf16" and all(math.isfinite(x) for x in summary["epoch_losses"])
    assert summary["epoch_losses"][-1] < summary["epoch_losses"][0]
    state = load_checkpoint(checkpoints(tmp_path / "run")[-1])["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # weights stay fp32
