"""configs/experiment/table2_*: the Table 2 analogue at CPU scale (Child et al. 2019, Table 2).

Within a family (images, text) every variant has the same data, model size, parameter count and recipe;
only the attention pattern differs, and it is the one the variant's name says.
"""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS_DIR, compose
from omegaconf import OmegaConf

from zoo.registry import build, resolve_config

VARIANTS = ["dense", "strided", "fixed", "fixed_merged", "fixed_interleaved", "fixed_distinct"]
FAMILIES = {"images": ("fashion_mnist", 784), "text": ("wikipedia_excerpt", 2048)}


def _composed(family: str, variant: str):
    cfg = compose("train", [f"experiment=table2_{family}_{variant}"])
    seq_len = FAMILIES[family][1]
    config = resolve_config(cfg.model, seq_len=seq_len, data_shape=list(cfg.model.data_shape))
    return cfg, config


def test_every_variant_has_a_file() -> None:
    names = {p.stem for p in (CONFIGS_DIR / "experiment").glob("table2_*.yaml")}
    assert names == {f"table2_{f}" for f in FAMILIES} | {
        f"table2_{f}_{v}" for f in FAMILIES for v in VARIANTS
    }


@pytest.mark.parametrize("family", list(FAMILIES))
def test_variants_differ_only_in_the_pattern(family: str) -> None:
    data_name, seq_len = FAMILIES[family]
    seen = {}
    for variant in VARIANTS:
        cfg, config = _composed(family, variant)
        assert cfg.data.name == data_name and cfg.data.get("seq_len", seq_len) == seq_len
        with torch.device("meta"):
            model = build(config)
        trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
        rest = {k: v for k, v in config.to_dict().items() if k != "attention"}
        attention = {k: v for k, v in dict(config.attention).items() if not (k == "num_heads" and v is None)}
        seen[variant] = (trainer, rest, model.num_parameters(), attention)  # num_heads None: set by the model
    first = seen["dense"]
    for variant, (trainer, rest, params, _) in seen.items():
        assert trainer == first[0], variant  # same recipe and number of steps
        assert rest == first[1], variant  # same size, embedding, init, backend
        assert params == first[2], variant
    attn = {v: a for v, (_, _, _, a) in seen.items()}
    assert attn["dense"] == {"name": "dense"}
    assert attn["strided"]["name"] == "strided" and attn["strided"]["mode"] == "split"
    assert {attn[v]["name"] for v in VARIANTS[2:]} == {"fixed"}
    assert [attn[v]["mode"] for v in VARIANTS[2:]] == ["split", "merged", "interleaved", "merged"]
    n_head = first[1]["n_head"]
    for variant in VARIANTS[2:5]:
        assert attn[variant].get("num_different_global_patterns", 1) == 1
    distinct = attn["fixed_distinct"]
    # §4.3: every head its own summary sub-block of length c, as many as fit in a block
    assert distinct["num_different_global_patterns"] == min(n_head, distinct["stride"] // distinct["c"])
    assert distinct["num_different_global_patterns"] > 1
