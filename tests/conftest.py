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
