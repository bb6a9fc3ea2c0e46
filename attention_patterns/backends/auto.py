"""The ``auto`` backend: picks the fastest available backend for the device, pattern and length.

``auto`` is the default backend of every model (``ModelConfig.attention_backend``); the dense
masked reference is for tests and for an explicit ``attention_backend=dense``. The choice (measured
on the benchmarks in ``docs/benchmarks.md``; Child et al. 2019 §5.5 on why sparse kernels pay off
only when the pattern skips whole blocks):

* **CPU** - ``blocksparse`` at every length and density: its structured pieces and block gather
  run on fused CPU kernels and train, and it serves the dense pattern with the causal fused
  kernel; it measured faster than the dense masked reference from n = 128 up (strided, fixed,
  bigbird). ``flex`` is never chosen on CPU (no backward there).
* **CUDA** - ``xformers`` when it is installed and serves every head group exactly (single-part
  heads: dense, local, split/interleaved strided and axial), else ``flex`` (any pattern, fused,
  trains), else ``blocksparse``.
* anything else - ``blocksparse``.

Options (``AutoBackend(**options)``, or ``model.attention_backend_options`` in a config) are handed
to the backend ``auto`` picks, each to the backends that take it: ``save_probs`` reaches
``blocksparse`` on CPU and is left out (one warning line) when ``flex`` serves a CUDA tensor. An
option that no candidate backend takes is an error.

Each decision is logged once per ``(pattern, device, choice)`` on the
``attention_patterns.backends.auto`` logger (DEBUG; the model logs the resolved backend at INFO,
see :meth:`zoo.model.SparseTransformer.forward`); :meth:`AutoBackend.choose` returns it without
running anything.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from typing import Any

import torch

from ..base import AttentionPattern
from . import _get, backend_availability, create_backend, register_backend
from .base import AttentionBackend, check_qkv

log = logging.getLogger(__name__)

#: the backends ``auto`` may delegate to (and whose options it forwards)
CANDIDATES = ("blocksparse", "flex", "xformers")


def backend_options(name: str) -> set[str]:
    """Keyword options the constructor of backend ``name`` accepts."""
    params = inspect.signature(_get(name).__init__).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in named and p.name not in ("self", "ops")}


#: decisions remembered as already logged (the oldest is forgotten, and logged again if it recurs)
LOGGED_KEYS = 64


class AutoBackend(AttentionBackend):
    """Delegates every call to the backend :meth:`choose` picks (instances are kept and reused)."""

    name = "auto"

    def __init__(self, **options: Any) -> None:
        accepted = {name: backend_options(name) for name in CANDIDATES}
        unknown = sorted(k for k in options if not any(k in acc for acc in accepted.values()))
        if unknown:
            valid = sorted(set().union(*accepted.values()))
            raise ValueError(
                f"backend 'auto' forwards options to {list(CANDIDATES)}, none of which takes {unknown}; "
                f"valid options are {valid}"
            )
        self.options = dict(options)
        self._accepted = accepted
        self._backends: dict[str, AttentionBackend] = {}
        self._logged: OrderedDict[tuple, None] = OrderedDict()  # the last LOGGED_KEYS decisions logged
        if any(k in accepted["blocksparse"] for k in options):  # bad values fail now, not at the first forward
            self._backend("blocksparse")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"AutoBackend({opts})"

    @classmethod
    def availability(cls, device: torch.device | str = "cpu") -> tuple[bool, str]:
        from .blocksparse import device_usable

        return device_usable(device)

    def choose(self, component: AttentionPattern, n: int, device: torch.device | str, layer: int = 0) -> str:
        """Name of the backend used for ``component`` at length ``n`` on ``device``."""
        dev = torch.device(device)
        if dev.type == "cpu":
            return "blocksparse"
        if dev.type == "cuda":
            if backend_availability("xformers", dev)[0]:
                from .xformers import XFormersBackend

                if XFormersBackend.supports(component, layer):
                    return "xformers"
            if backend_availability("flex", dev)[0]:
                return "flex"
        return "blocksparse"

    def _backend(self, name: str) -> AttentionBackend:
        backends = self._backends
        if name not in backends:
            mine = {k: v for k, v in self.options.items() if k in self._accepted[name]}
            dropped = sorted(set(self.options) - set(mine))
            if dropped:
                log.warning("auto attention backend: %s does not take options %s; they are left out", name, dropped)
            backends[name] = create_backend(name, **mine)
        return backends[name]

    def attend(self, q, k, v, component, layer=0, scale=None):
        check_qkv(q, k, v)
        T = q.shape[2]
        name = self.choose(component, T, q.device, layer)
        key = (id(component), str(q.device), name)
        if key not in self._logged:
            self._logged[key] = None
            if len(self._logged) > LOGGED_KEYS:  # bounded: one key per length would grow with every length
                self._logged.popitem(last=False)
            log.debug(
                "auto attention backend: %s for pattern %r (n=%d, layer %d, device %s, density %s)",
                name, component.name, T, layer, q.device, _density(component, T, layer),
            )  # fmt: skip
        return self._backend(name).attend(q, k, v, component, layer, scale)

    def attention_probs(self, q, k, component, layer=0, rows=None, scale=None):
        """The probabilities of the backend :meth:`choose` picks for these inputs (see the base class)."""
        return self._backend(self.choose(component, q.shape[2], q.device, layer)).attention_probs(
            q, k, component, layer, rows, scale
        )


def _density(component: AttentionPattern, n: int, layer: int) -> str:
    if n > 4096:  # row counts cost O(n^2) index work; not worth it for a log line
        return "n/a"
    return f"{component.density(n, layer):.3f}"


register_backend(AutoBackend)
