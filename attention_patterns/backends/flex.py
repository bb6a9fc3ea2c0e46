"""The ``flex`` backend: PyTorch FlexAttention with a ``BlockMask`` from the component's ``mask_mod``.

FlexAttention (``torch.nn.attention.flex_attention``) compiles the pattern's index arithmetic into a
fused kernel that skips the blocks the ``BlockMask`` marks empty: the GPU analogue of the paper's
block-sparse kernels (Child et al. 2019, §5.5). The ``BlockMask`` is built once per ``(component,
n, layer, device, block size)`` with ``create_block_mask`` and cached.

* On CUDA it is the training backend (forward and backward, under ``torch.compile``).
* On CPU it serves **inference only**: PyTorch 2.13-2.14 raise "FlexAttention does not support
  backward on CPU" for inputs that require grad, and a process that hit that error ran the compiled
  kernel about 10x slower afterwards. This backend therefore never calls FlexAttention on CPU when
  a gradient is needed; it raises a clear error instead (use ``blocksparse`` to train on CPU).
* ``torch.compile`` caches one graph per mask and shape and by default gives up after 8 recompiles
  of a function, silently falling back to the slow unfused path. The compiled function is shared
  and the recompile limits are raised once, deliberately, to :data:`RECOMPILE_LIMIT`.

Rows with no allowed key give a zero output (FlexAttention's convention, the same as the dense
reference). Options: ``block_size`` (BlockMask block, default 128; choose the pattern's stride
``l >= 4 block_size`` or block skipping finds nothing to skip), ``compile`` (default True; False
runs FlexAttention's unfused reference path, for tests) and ``cache_size`` (block masks kept, least
recently used evicted).
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import torch
from torch import Tensor

from ..base import AttentionPattern
from . import register_backend
from .base import AttentionBackend, check_qkv
from .lru import DEFAULT_SIZE, BoundedCache

log = logging.getLogger(__name__)

#: recompile limit set once for the shared compiled ``flex_attention`` (dynamo's default is 8)
RECOMPILE_LIMIT = 64

_COMPILED: Any = None


def _flex_module():
    from torch.nn.attention import flex_attention as fa

    return fa


def compiled_flex_attention():
    """The process-wide compiled ``flex_attention`` (compiled once, recompile limit raised once)."""
    global _COMPILED
    if _COMPILED is None:
        cfg = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, name) and getattr(cfg, name) < RECOMPILE_LIMIT:
                setattr(cfg, name, RECOMPILE_LIMIT)
                log.info("flex backend: raised torch._dynamo.config.%s to %d", name, RECOMPILE_LIMIT)
        if (
            hasattr(cfg, "accumulated_recompile_limit")
            and cfg.accumulated_recompile_limit < 8 * RECOMPILE_LIMIT
        ):
            cfg.accumulated_recompile_limit = 8 * RECOMPILE_LIMIT
        _COMPILED = torch.compile(_flex_module().flex_attention, dynamic=False)
    return _COMPILED


class FlexBackend(AttentionBackend):
    """FlexAttention with a ``BlockMask`` per ``(component, n, layer, device)`` (the last few cached)."""

    name = "flex"

    @property
    def supports_backward(self) -> bool:  # type: ignore[override]
        """True only where FlexAttention can train here: with CUDA (never on CPU, see the module doc)."""
        return torch.cuda.is_available()

    def __init__(
        self, block_size: int = 128, compile: bool = True, cache_size: int = DEFAULT_SIZE, **options: Any
    ) -> None:
        super().__init__(**options)
        if (
            isinstance(block_size, bool)
            or not isinstance(block_size, int)
            or block_size < 16
            or block_size % 16
        ):
            raise ValueError(
                f"block_size must be a positive multiple of 16 (e.g. 64 or 128), got {block_size!r}"
            )
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be True or False, got {compile!r}")
        self.block_size, self.compile = block_size, compile
        self._masks = BoundedCache(cache_size)  # the last block masks: bounded however many lengths are served

    def __repr__(self) -> str:
        return f"FlexBackend(block_size={self.block_size}, compile={self.compile})"

    @classmethod
    def availability(cls, device: torch.device | str = "cpu") -> tuple[bool, str]:
        try:
            _flex_module()
        except ImportError as e:  # pragma: no cover - torch < 2.5
            return False, f"torch.nn.attention.flex_attention is not importable ({e}); it needs torch >= 2.5"
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            return False, "CUDA is not available"
        if dev.type == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
            return False, "torch.compile on CPU needs a C++ compiler (g++/c++), none found on PATH"
        if dev.type not in ("cpu", "cuda"):
            return False, f"flex backend supports cpu (inference) and cuda, not {dev.type}"
        return True, "" if dev.type == "cuda" else "CPU: forward (inference) only; train with 'blocksparse'"

    @staticmethod
    def supports_backward_on(device: torch.device | str) -> bool:
        """FlexAttention has no CPU backward in torch 2.13-2.14: training needs CUDA."""
        return torch.device(device).type == "cuda"

    def block_mask(
        self, component: AttentionPattern, n: int, layer: int, num_heads: int, device: torch.device
    ):
        """The cached ``BlockMask`` (heads broadcast when the pattern is the same for every head)."""
        key = (n, layer % component.num_layers_period, num_heads, str(device))
        mask = self._masks.lookup(component, key)
        if mask is None:
            component.validate_length(n)
            heads = component.mask_heads(layer)
            if heads not in (1, num_heads):
                raise ValueError(
                    f"component {component.name!r} gives {heads} head masks but q has {num_heads} heads; "
                    f"set the component's num_heads to {num_heads}"
                )
            mask = self._masks.store(
                component,
                key,
                _flex_module().create_block_mask(
                    component.mask_mod(layer, device=device),
                    B=None,
                    H=None if heads == 1 else heads,
                    Q_LEN=n,
                    KV_LEN=n,
                    device=str(device),
                    BLOCK_SIZE=self.block_size,
                ),
            )
        return mask

    def attend(self, q, k, v, component, layer=0, scale=None):
        check_qkv(q, k, v)
        if (
            not self.supports_backward_on(q.device)
            and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad)
        ):
            raise RuntimeError(
                f"the flex backend cannot train on {q.device.type}: FlexAttention has no backward pass on CPU "
                "in torch 2.13-2.14. Use attention_backend='blocksparse' to train on CPU, or run under "
                "torch.no_grad() / torch.inference_mode() for inference with flex."
            )
        B, H, T, _ = q.shape
        mask = self.block_mask(component, T, layer, H, q.device)
        fn = compiled_flex_attention() if self.compile else _flex_module().flex_attention
        out: Tensor = fn(q, k, v, block_mask=mask, scale=scale)  # (B, H, T, Dv)
        return out


register_backend(FlexBackend)
