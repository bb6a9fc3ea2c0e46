"""scripts/sample.py and zoo.samples on a checkpoint trained here for a few steps; media helpers;
the training callback that logs completions (zoo.sample_callbacks)."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from zoo.media import HIDDEN, completion_grid, decode_text, grid_array, is_image_shape, write_wav
from zoo.sample_callbacks import SampleImages, from_logger_config
from zoo.samples import SampleError, run_sampling
from zoo.train import Trainer, run

REPO = Path(__file__).resolve().parents[1]
# 14x14 synthetic images, a 2-layer strided model, 4 steps: a checkpoint in seconds
SMOKE = [
    "experiment=fashion_mnist_smoke",
    "data=synthetic",
    "data.size=16",
    "data.val_size=4",
    "data.test_size=8",
    "data.seq_len=196",
    "data.data_shape=[14,14]",
    "model.attention.stride=14",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from conftest import compose

    folder = tmp_path_factory.mktemp("run")
    run(compose("train", SMOKE), folder)
    return folder  # a run folder: scripts/sample.py takes its newest checkpoint


def test_sample_script_runs_every_mode_and_writes_its_files(checkpoint, tmp_path):
    """One Hydra multirun of scripts/sample.py: the four modes, each in its own job folder."""
    cmd = [
        sys.executable, "scripts/sample.py", "-m", f"checkpoint={checkpoint}", "num=3", "max_new=40",
        "mode=unconditional,complete,text,audio", f"hydra.sweep.dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = {m: tmp_path / str(k) for k, m in enumerate(["unconditional", "complete", "text", "audio"])}
    # unconditional: 3 images of 40 sampled bytes (the rest of each 14x14 image grey), one row, scale 2
    assert PIL.Image.open(jobs["unconditional"] / "unconditional.png").size == (3 * 30 + 2, 30 + 2)
    # complete: 3 columns, rows input / completion / original
    assert PIL.Image.open(jobs["complete"] / "complete.png").size == (3 * 30 + 2, 3 * 30 + 2)
    text = (jobs["text"] / "text.txt").read_text(encoding="utf-8")
    assert text.count("=== sample ") == 3 and "(98 prompt bytes + 40 sampled)" in text
    for k in range(3):
        with wave.open(str(jobs["audio"] / f"audio_{k:02d}.wav")) as w:
            assert (w.getnframes(), w.getframerate(), w.getsampwidth()) == (98 + 40, 12000, 2)
    lines = [line for line in out.stdout.splitlines() if "bytes sampled in" in line]
    assert len(lines) == 4 and all("bytes/s" in line for line in lines)
    assert "=== sample 0" in out.stdout  # the text mode prints its continuations


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "error: checkpoint=PATH is required"),
        pytest.param(
            ["checkpoint=CKPT", "mode=video"],
            "error: mode must be one of ['unconditional', 'complete', 'text', 'audio'], got 'video'",
            marks=pytest.mark.slow,  # the same path as test_run_sampling_rejects_bad_options, in a process
        ),
    ],
    ids=["missing_checkpoint", "bad_mode"],
)
def test_sample_script_user_mistakes_print_one_line(checkpoint, tmp_path, args, message):
    args = [a.replace("CKPT", str(checkpoint)) for a in args]
    cmd = [sys.executable, "scripts/sample.py", *args, f"hydra.run.dir={tmp_path}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip() == message or out.stderr.strip().startswith(message), out.stderr
    assert "Traceback" not in out.stderr


def test_completion_keeps_the_prompt_and_is_seeded(checkpoint, tmp_path):
    from zoo.pretrained import load_trained, run_data

    options = {"checkpoint": str(checkpoint), "mode": "complete", "num": 2, "seed": 5}
    a = run_sampling({**options, "out": str(tmp_path / "a.png")})
    b = run_sampling({**options, "out": str(tmp_path / "b.png")})
    assert a["prompt_bytes"] == 98 and a["new_bytes"] == 2 * 98
    assert np.array_equal(
        np.asarray(PIL.Image.open(a["files"][0])), np.asarray(PIL.Image.open(b["files"][0]))
    )
    grid = np.asarray(PIL.Image.open(a["files"][0]).convert("L"))
    trained = load_trained(checkpoint)
    test = run_data(trained).test
    first = test[0].view(14, 14).numpy()
    # the top half of the original appears in the input row (column 0, scale 2, padding 2)
    cell = grid[2 : 2 + 28 : 2, 2 : 2 + 28 : 2]
    assert np.array_equal(cell[:7], first[:7]) and bool((cell[7:] == HIDDEN).all())


def test_run_sampling_rejects_bad_options(checkpoint):
    """What the script prints after 'error: ' (zoo.cli.guard prints user errors)."""
    from zoo.errors import is_user_error

    with pytest.raises(
        SampleError, match=r"mode must be one of \['unconditional', 'complete', 'text', 'audio'\]"
    ):
        run_sampling({"checkpoint": str(checkpoint), "mode": "video"})
    with pytest.raises(SampleError, match=r"^num must be an integer >= 1, got 0$"):
        run_sampling({"checkpoint": str(checkpoint), "num": 0})
    with pytest.raises(FileNotFoundError, match=r"^checkpoint /no/such/run does not exist") as err:
        run_sampling({"checkpoint": "/no/such/run"})
    assert is_user_error(err.value)
    with pytest.raises(
        SampleError, match=r"prompt_len must be in \[0, 195\] for sequences of 196 bytes, got 500"
    ):
        run_sampling({"checkpoint": str(checkpoint), "num": 2, "prompt_len": 500})
    with pytest.raises(SampleError, match="fewer than num=16"):
        run_sampling({"checkpoint": str(checkpoint), "num": 16})
    with pytest.raises(SampleError, match=r"unknown option\(s\) \['nmu'\]"):
        run_sampling({"checkpoint": str(checkpoint), "nmu": 3})
    with pytest.raises(SampleError, match="prompt=... is for mode=text"):
        run_sampling({"checkpoint": str(checkpoint), "prompt": "hi"})


# --------------------------------------------------------------------------------- media
def test_image_shapes():
    assert is_image_shape([28, 28]) and is_image_shape([32, 32, 3]) and is_image_shape([3, 32, 32])
    assert not is_image_shape([1024]) and not is_image_shape([4, 4, 5])


def test_completion_grid_layout_and_text_decoding(tmp_path):
    originals = torch.arange(8).view(2, 4) * 30  # two 2x2 "images"
    grid = completion_grid(originals, originals.flip(0), 2, [2, 2])
    assert tuple(grid.shape) == (3, 3 * 4 + 2, 2 * 4 + 2)  # rows input / completion / original
    arr = grid_array(grid)
    assert arr.dtype == np.uint8 and arr.shape == (14, 10, 3)
    assert decode_text([104, 105, 0xFF, 0xC3]) == "hi\ufffd\ufffd"


def test_write_wav_decodes_mu_law_and_linear(tmp_path):
    from zoo.data.audio import mu_law_encode

    x = torch.sin(torch.linspace(0, 20, 240)) * 0.5
    for quant, q in (("mu_law", mu_law_encode(x)), ("linear", (torch.floor(x * 128) + 128).to(torch.uint8))):
        path = write_wav(tmp_path / f"{quant}.wav", q, 12000, quant)
        with wave.open(str(path)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32767.0
        assert np.abs(pcm - x.numpy()).max() < 0.02  # 8-bit levels decoded back
    with pytest.raises(ValueError, match="quantization must be one of"):
        write_wav(tmp_path / "x.wav", q, 12000, "alaw")


# --------------------------------------------------------------------------------- during training
def test_callbacks_come_from_the_wandb_logger_config():
    cb = from_logger_config({"name": "wandb", "project": "p", "completions": 2, "sample_images": 0})
    assert isinstance(cb, SampleImages) and (cb.completions, cb.sample_images) == (2, 0)
    assert (
        from_logger_config({"name": "wandb"}).completions,
        from_logger_config({"name": "wandb"}).sample_images,
    ) == (4, 4)
    assert from_logger_config({"name": "wandb", "completions": 0, "sample_images": 0}) is None
    assert from_logger_config(None) is None and from_logger_config({"name": "none"}) is None
    with pytest.raises(ValueError, match="logger.completions must be an integer >= 0"):
        from_logger_config({"name": "wandb", "completions": -1})
    from zoo.train import logger_callbacks

    kinds = {type(c).__name__ for c in logger_callbacks({"name": "wandb", "prediction_images": 1})}
    assert "SampleImages" in kinds and len(kinds) == 2


class RecordingLogger:
    name = "recording"

    def __init__(self) -> None:
        self.images: list[tuple[int, dict]] = []
        self.metrics: list[dict] = []

    def log_metrics(self, metrics, step):
        self.metrics.append(dict(metrics, step=step))

    def log_summary(self, summary):
        pass

    def log_images(self, images, step):
        self.images.append((step, dict(images)))

    def finish(self):
        pass


def test_sample_callback_logs_grids_and_leaves_training_unchanged():
    from zoo.data import build_data
    from zoo.registry import build

    def fit(callbacks):
        torch.manual_seed(0)
        data = build_data("synthetic", size=16, val_size=4, test_size=4, seq_len=64, data_shape=[8, 8])
        model = build(
            "strided", n_layer=1, n_embd=16, n_head=2, seq_len=64, data_shape=[8, 8], attention={"stride": 8}
        )
        logger = RecordingLogger()
        options = {
            "steps": 4,
            "batch_size": 4,
            "eval_every": 2,
            "eval_examples": 4,
            "log_every": 1,
            "progress": False,
        }
        Trainer(model, data, options, logger=logger, callbacks=callbacks).fit()
        return logger

    plain = fit([])
    logged = fit([SampleImages(completions=3, sample_images=5, scale=1)])
    assert [m["train/loss"] for m in plain.metrics if "train/loss" in m] == [
        m["train/loss"] for m in logged.metrics if "train/loss" in m
    ]  # same losses: the callback changes no training state
    assert [(step, sorted(images)) for step, images in logged.images] == [
        (2, ["completions"]),
        (4, ["samples"]),
    ]
    assert logged.images[0][1]["completions"].shape == (3 * 10 + 2, 3 * 10 + 2, 3)  # 3 x 3 cells of 8 + 2 px
    assert logged.images[1][1]["samples"].shape == (10 + 2, 5 * 10 + 2, 3)


def test_sample_yaml_mirrors_the_config_dataclass(compose_config):
    """configs/sample.yaml lists every SampleConfig option with its default (checkpoint: required)."""
    import dataclasses

    from omegaconf import OmegaConf

    from zoo.samples import SampleConfig

    cfg = OmegaConf.to_container(compose_config("sample"), resolve=True)
    assert cfg.pop("checkpoint") == "???"
    defaults = {
        f.name: (f.default_factory() if callable(f.default_factory) else f.default)
        for f in dataclasses.fields(SampleConfig)
    }
    defaults.pop("checkpoint")
    assert cfg == defaults


def test_sampling_pictures_script_writes_named_pictures_and_caption(checkpoint, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import sampling_pictures

    code = sampling_pictures.main(
        [str(checkpoint), "--name", "tiny", "--label", "a test run's checkpoint", "--root", str(tmp_path)]
    )
    assert code == 0
    for picture in ("complete", "unconditional"):
        assert (tmp_path / "docs" / "img" / f"tiny_{picture}.png").stat().st_size > 0
    record = json.loads((tmp_path / "docs" / "results" / "tiny_pictures.json").read_text())
    text = sampling_pictures.caption(record["data"])["main"]
    assert "a test run's checkpoint" in text and "docs/img/tiny_complete.png" in text
    assert "default run" not in text
