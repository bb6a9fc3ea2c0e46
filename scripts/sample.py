"""Samples, completions and continuations of a trained checkpoint (Child et al. 2019 §7), from ``configs/sample.yaml``.

    python scripts/sample.py checkpoint=outputs/DATE/TIME mode=complete num=16     # top halves given
    python scripts/sample.py checkpoint=outputs/DATE/TIME mode=unconditional num=64
    python scripts/sample.py checkpoint=runs/enwik8 mode=text prompt="Sparse attention" max_new=200
    python scripts/sample.py checkpoint=runs/audio mode=audio num=4 prompt_len=12000 max_new=12000
    python scripts/sample.py checkpoint=PATH mode=complete out=docs/img/completions.png seed=1

Image modes write one PNG grid (complete: a column per image, rows input / completion / original),
``text`` prints the continuations and writes a ``.txt``, ``audio`` writes one ``.wav`` per sequence; the
files go to Hydra's run folder (``outputs/samples/DATE/TIME``) unless ``out=FILE``. The last line gives
the bytes per second reached. Decoding is key/value-cached and sparse-aware (:mod:`zoo.generate`).
A mistake (no checkpoint, a bad mode or count) prints one line starting with ``error:`` and exits with
status 2 (:func:`zoo.cli.guard`).
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from zoo.cli import guard
from zoo.samples import SampleError, run_sampling, summary


@hydra.main(version_base="1.3", config_path="../configs", config_name="sample")
@guard
def main(cfg: DictConfig) -> None:
    logging.getLogger("attention_patterns").setLevel(logging.WARNING)
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise SampleError("checkpoint=PATH is required (a checkpoint file or a run folder of scripts/train.py)")
    result = run_sampling(OmegaConf.to_container(cfg, resolve=True), HydraConfig.get().runtime.output_dir)
    if result["text"] is not None:
        print(result["text"])
    print(summary(result))


if __name__ == "__main__":
    main()
