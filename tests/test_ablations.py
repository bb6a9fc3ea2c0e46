"""Ablations that mean what they say: the pattern group, one override per axis, sweeps in one command,
the vacuous-setting warning and the collected results (zoo.run_record, zoo.results, scripts/collect.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, compose
from omegaconf import OmegaConf

import attention_patterns as ap
from zoo.registry import build, get_model_config, list_models
from zoo.run_record import RunRecord, vacuous_settings
from zoo.train import build_from_config

TRAIN = REPO_ROOT / "scripts" / "train.py"
COLLECT = REPO_ROOT / "scripts" / "collect.py"
# 8x8 synthetic "images" and a 1-block model: a job takes about a second
TINY_DATA = [
    "data=synthetic",
    "data.size=8",
    "data.val_size=4",
    "data.test_size=4",
    "data.seq_len=64",
    "data.data_shape=[8,8]",
]
TINY_MODEL = ["model.n_layer=1", "model.n_embd=16", "model.n_head=2"]
TINY_TRAINER = [
    "trainer=smoke",
    "trainer.steps=2",
    "trainer.eval_every=1",
    "trainer.final_val=true",
    "trainer.threads=1",
]


def _forward(cfg) -> torch.nn.Module:
    model, data = build_from_config(cfg)
    batch = torch.stack([data.train[i] for i in range(2)])  # (2, T)
    assert torch.isfinite(model(batch)).all()
    return model


# ----------------------------------------------------------------------------- the pattern group
@pytest.mark.parametrize("model", list_models())
def test_every_model_composes_with_every_pattern_giving_its_defaults(model):
    """model/attention=NAME replaces the whole node by NAME's YAML, schema-typed, from every variant."""
    for pattern in ap.list_attentions():
        node = compose("train", [f"model={model}", f"model/attention={pattern}"]).model.attention
        assert OmegaConf.get_type(node) is ap.get_config(pattern)
        assert OmegaConf.to_container(node) == dataclasses.asdict(ap.get_config(pattern)())


def test_variants_keep_their_own_pattern_values_unless_switched():
    fixed = compose("train", ["model=fixed"]).model.attention
    assert (fixed.name, fixed.stride, fixed.c) == ("fixed", 28, 4)  # the preset fixed_stride28_c4
    group = compose("train", ["model=fixed", "model/attention=fixed"]).model.attention
    assert (group.stride, group.c) == (128, 16)  # the group's fixed: the pattern's defaults
    one_value = compose("train", ["model/attention=fixed", "model.attention.c=8"]).model.attention
    assert (one_value.stride, one_value.c) == (128, 8)
    assert "model/attention=fixed_stride28_c4" in (REPO_ROOT / "configs" / "model" / "fixed.yaml").read_text()


def test_the_pattern_group_composes_with_experiments():
    """An experiment's delta applies after the group; an experiment can switch the pattern itself."""
    smoke = compose("train", ["experiment=enwik8_smoke"]).model.attention
    assert (smoke.name, smoke.stride, smoke.c, smoke.mode) == ("fixed", 16, 4, "merged")
    switched = compose("train", ["experiment=fashion_mnist_smoke", "model/attention=local"])
    assert OmegaConf.to_container(switched.model.attention) == {
        "name": "local",
        "window": 128,
        "num_heads": None,
    }
    assert switched.model.n_embd == 32  # the experiment's other values stay
    with pytest.raises(Exception, match="Key 'c' not in 'StridedConfig'"):
        # enwik8_smoke sets fixed's c: switching to strided fails loudly instead of dropping it
        compose("train", ["experiment=enwik8_smoke", "model/attention=strided"])


def test_an_experiment_can_switch_the_pattern_in_its_defaults(tmp_path):
    import shutil

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    (configs / "experiment" / "local_rows.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model/attention: local\n\nmodel:\n  attention:\n    window: 56\n"
    )
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        for model in ("strided", "fixed"):
            cfg = hydra_compose("train", [f"model={model}", "experiment=local_rows"])
            assert OmegaConf.to_container(cfg.model.attention) == {"name": "local", "window": 56, "num_heads": None}


def test_renaming_the_pattern_fails_showing_the_group_syntax():
    cfg = compose("train", ["model.attention.name=fixed", *TINY_DATA, *TINY_MODEL])
    with pytest.raises(ValueError) as info:
        build_from_config(cfg)
    message = str(info.value)
    assert "model.attention.name=fixed" in message and "model/attention=fixed" in message
    assert "-m model/attention=strided,fixed" in message
    # the same name is fine (nothing changes)
    _forward(compose("train", ["model.attention.name=strided", *TINY_DATA, *TINY_MODEL]))


def test_old_spellings_fail_loudly():
    with pytest.raises(Exception, match="Could not override 'attention'"):
        compose("train", ["attention=fixed"])
    with pytest.raises(Exception, match="Multiple values for model/attention"):
        compose("train", ["+model/attention=fixed"])


# ----------------------------------------------------------------------------- one override per axis
@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (["model/attention=local"], lambda m: m.component.name == "local"),
        (["model.attention.mode=merged"], lambda m: m.component.config.mode == "merged"),
        (["model.attention.mode=interleaved"], lambda m: m.component.num_layers_period == 2),
        (["model.attention.stride=4"], lambda m: m.component.config.stride == 4),
        (
            ["model/attention=fixed", "model.attention.stride=8", "model.attention.c=2"],
            lambda m: m.component.config.c == 2,
        ),
        (["model.embedding=absolute"], lambda m: m.embed_in.position.sizes == [64]),
        (
            ["model.embedding=attention", "model.attention.stride=4"],
            lambda m: m.embed_in.position.sizes == [16, 4],
        ),
        (["model.half_ffn=true"], lambda m: m.blocks[0].ffn.fc1.out_features == 2 * 16),
        (["model.half_qk=true"], lambda m: m.config.qk_dim == 8),
        (["model.n_layer=2", "model.n_embd=32"], lambda m: len(m.blocks) == 2 and m.config.n_embd == 32),
        (["model.attention_backend=blocksparse"], lambda m: m.backend.name == "blocksparse"),
    ],
)
def test_every_ablation_axis_is_one_override(overrides, check):
    cfg = compose("train", [*TINY_DATA, *TINY_MODEL, *overrides])
    assert check(_forward(cfg))


# ----------------------------------------------------------------------------- vacuous settings
def test_attention_embedding_equals_data_embedding_when_the_stride_is_the_width():
    """The claim the warning makes: the same tables, the same initialisation, identical logits."""
    x = torch.randint(0, 256, (2, 784))

    def model(**over):
        torch.manual_seed(0)
        m = build("strided", n_layer=1, **over)
        torch.nn.init.normal_(m.head.weight)  # zero at initialisation (§6): make the logits informative
        return m

    data, attention = model(embedding="data"), model(embedding="attention")  # stride 28 = the width
    assert all(torch.equal(a, b) for a, b in zip(data.state_dict().values(), attention.state_dict().values()))
    assert torch.equal(data(x), attention(x))
    wide = {"attention": {"name": "strided", "stride": 56, "mode": "split"}}  # a 14 x 56 grid: another model
    assert not torch.allclose(model(embedding="data", **wide)(x), model(embedding="attention", **wide)(x))


def test_the_vacuous_embedding_warning_fires_on_the_default_data_only(caplog):
    default = compose("train", ["model.embedding=attention"])  # Fashion-MNIST 28 x 28, stride 28
    config = dataclasses.replace(get_model_config("strided"), embedding="attention")
    (message,) = vacuous_settings(config, reference_embedding="data")
    assert "model.embedding=attention gives the same model as model.embedding=data" in message
    assert default.data.name == "fashion_mnist" and default.model.attention.stride == 28
    assert vacuous_settings(dataclasses.replace(config, embedding="data"), "data") == []  # the model's own
    assert vacuous_settings(dataclasses.replace(config, embedding="absolute"), "data") == []  # differs
    wide = dataclasses.replace(config, attention={"name": "strided", "stride": 56, "mode": "split"})
    assert vacuous_settings(wide, "data") == []  # stride 56: a 14 x 56 grid, another model
    stream = dataclasses.replace(config, embedding="absolute", seq_len=64, data_shape=[64])
    assert "model.embedding=data" in vacuous_settings(stream, "data")[0]  # 1-D data: absolute = data

    # the run says it once, as a warning, when it starts; runs whose embeddings differ say nothing
    for overrides, expected in (
        (["model.embedding=attention", "model.attention.stride=8"], 1),
        (["model.embedding=attention", "model.attention.stride=4"], 0),
        (["model.embedding=absolute", "model.attention.stride=8"], 0),
    ):
        cfg = compose("train", [*TINY_DATA, *TINY_MODEL, *overrides])
        model, data = build_from_config(cfg)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="zoo.run_record"):
            RunRecord(cfg, model, data, context={})
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == expected, (overrides, [r.message for r in warnings])


# ----------------------------------------------------------------------------- sweeps in one command
def _train(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(TRAIN), *overrides, f"hydra.sweep.dir={tmp}"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_multirun_across_patterns_with_different_keys(tmp_path):
    """strided (stride, mode) then local (window): the second job gets local's defaults, nothing else."""
    _train(
        tmp_path,
        "-m",
        "model/attention=strided,local",
        *TINY_DATA,
        *TINY_MODEL,
        *TINY_TRAINER,
        "trainer.test=false",
    )
    jobs = [json.loads((tmp_path / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert [j["model"]["attention"]["name"] for j in jobs] == ["strided", "local"]
    assert jobs[1]["model"]["attention"] == {"name": "local", "window": 128, "num_heads": None}
    assert [j["choices"]["model/attention"] for j in jobs] == ["strided", "local"]
    assert jobs[1]["overrides"][0] == "model/attention=local" and jobs[1]["sweep"]["job"] == 1


def test_sweep_then_collect_prints_the_four_row_table(tmp_path):
    """The documented ablation command (tiny data) as one command, then scripts/collect.py on its folder."""
    sweep = tmp_path / "sweep"
    _train(
        sweep,
        "-m",
        "model/attention=strided,fixed",
        "model.embedding=data,absolute",
        *TINY_DATA,
        *TINY_MODEL,
        *TINY_TRAINER,
    )
    record = json.loads((sweep / "3" / "metrics.json").read_text())
    for key in (
        "overrides",
        "model",
        "data_summary",
        "num_params",
        "step",
        "wall_time_s",
        "tokens_per_s",
        "val_bpd",
        "test_bpd",
        "val_curve",
    ):
        assert key in record, key
    assert record["model"]["attention"]["name"] == "fixed" and record["model"]["embedding"] == "absolute"
    assert record["data_summary"] == {
        "name": "synthetic",
        "seq_len": 64,
        "data_shape": [8, 8],
        "train": 8,
        "val": 4,
        "test": 4,
    }
    assert [p["step"] for p in record["val_curve"]] == [
        1,
        2,
    ]  # the periodic one, then the whole split at the end

    out = subprocess.run(
        [
            sys.executable,
            str(COLLECT),
            str(sweep),
            "--csv",
            str(tmp_path / "t.csv"),
            "--plot",
            str(tmp_path / "t.png"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 4
    assert out.stdout.count("| model/attention | model.embedding | parameters |") == 1
    assert [r.split("|")[1:3] for r in rows] == [
        [" `strided` ", " `data` "],
        [" `strided` ", " `absolute` "],
        [" `fixed` ", " `data` "],
        [" `fixed` ", " `absolute` "],
    ]
    assert f"{record['test_bpd']:.4f}" in rows[3]
    assert "`trainer=smoke`" in out.stdout  # the shared overrides above the table
    assert "Sweep: `python scripts/train.py -m model/attention=strided,fixed model.embedding=data,absolute" in out.stdout
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 5
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_wandb_runs_of_a_sweep_share_a_group_and_are_named_after_their_overrides():
    from zoo.run_record import hydra_context, name_sweep_runs

    assert hydra_context() is None  # outside a Hydra app: nothing is known, nothing is invented
    context = {"overrides": ["model/attention=fixed", "model.half_ffn=true"], "sweep": {"dir": "multirun/x", "job": 1}}
    cfg = compose("train", ["logger=wandb"])
    name_sweep_runs(cfg, context)
    assert (cfg.logger.group, cfg.logger.run_name) == ("multirun/x", "model/attention=fixed model.half_ffn=true")
    mine = compose("train", ["logger=wandb", "logger.group=mine", "logger.run_name=run-a"])
    name_sweep_runs(mine, context)
    assert (mine.logger.group, mine.logger.run_name) == ("mine", "run-a")  # set by the user: kept
    single = compose("train", ["logger=wandb"])
    name_sweep_runs(single, {**context, "sweep": None})  # a single run: named, no group
    assert single.logger.group is None and single.logger.run_name.startswith("model/attention=fixed")
    quiet = compose("train")
    name_sweep_runs(quiet, context)
    assert quiet.logger == {"name": "none"}
