"""Shared test fixtures: the configs folder and a Hydra compose helper.

``compose_config("train", ["model=strided_half", "trainer=smoke"])`` composes ``configs/`` with the
Hydra compose API (``initialize_config_dir`` on the absolute path), as ``scripts/train.py`` would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"


def compose(config_name: str = "train", overrides: Sequence[str] = ()):
    """Compose ``configs/<config_name>.yaml`` with ``overrides``; returns the DictConfig (struct mode)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import attention_patterns  # noqa: F401  (stores the attention schemas the attention YAMLs extend)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


@pytest.fixture
def compose_config() -> Callable:
    """The :func:`compose` helper as a fixture."""
    return compose


@pytest.fixture
def configs_dir() -> Path:
    return CONFIGS_DIR


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def data_yaml_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], dict]:
    """``configs/data/<name>.yaml`` checked against its builder, returned as the builder's options.

    Every key must be an option of the registered builder with the builder's default as value (``root``
    resolves under ``$ZOO_DATA_ROOT``, pointed at ``tmp_path``), and the YAML must list every option.
    """
    import inspect

    from omegaconf import OmegaConf

    from zoo.data.base import _DATASETS

    def load(name: str) -> dict:
        cfg = OmegaConf.load(Path(__file__).parents[1] / "configs" / "data" / f"{name}.yaml")
        monkeypatch.setenv("ZOO_DATA_ROOT", str(tmp_path))
        options = OmegaConf.to_container(cfg, resolve=True)
        assert options.pop("name") == name and options["root"] == str(tmp_path / name)
        params = inspect.signature(_DATASETS[name]).parameters
        for key, value in options.items():
            assert key in params, key
            default = params[key].default
            if key != "root":
                assert value == (list(default) if isinstance(default, tuple) else default), key
        assert set(params) - set(options) == {"unknown"}  # the YAML lists every option
        return options

    return load
