"""Import timm without the ``wandb`` import it attempts, so that ``logger=none`` runs never load wandb.

``timm.utils.summary`` runs ``try: import wandb`` at import time, which loads wandb (seconds, and a
dependency a run with ``logger=none`` promises not to touch) whenever it is installed. :func:`timm`
imports timm with ``wandb`` masked, unless wandb is already loaded (then nothing changes); only timm's
``update_summary(log_wandb=True)``, which this project does not use, needs that import.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def timm(submodule: str = "") -> ModuleType:
    """``timm`` (or ``timm.<submodule>``), imported with ``wandb`` masked if wandb is not loaded yet."""
    name = f"timm.{submodule}" if submodule else "timm"
    if name in sys.modules:
        return sys.modules[name]
    mask = "wandb" not in sys.modules
    if mask:
        sys.modules["wandb"] = None  # `import wandb` raises ImportError, which timm catches
    try:
        return importlib.import_module(name)
    finally:
        if mask and sys.modules.get("wandb", 0) is None:
            del sys.modules["wandb"]
