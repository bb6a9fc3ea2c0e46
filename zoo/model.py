"""The Sparse Transformer (Child et al. 2019, arXiv 1904.10509, §5-6), nanoGPT-style.

::

    H_0 = embed(shift_right(X), W_e)                         # §5.3, zoo.embeddings
    H_k = H_{k-1} + dropout(attention(norm(H_{k-1})))        # §5.2 eq. 12 (pre-activation)
    H_k = H_k     + dropout(ff(norm(H_k)))                   # §5.2 eq. 13-14
    y   = softmax(norm(H_N) W_out)                           # eq. 11

* dropout only at the end of each residual branch: none on the attention weights or the
  embeddings (§5.4);
* ``ff`` uses GELU ``x * sigmoid(1.702 x)``, width ``4d`` or ``2d`` with ``half_ffn`` (§5.2, §6);
  queries and keys are projected to ``d/2`` with ``half_qk`` (§6);
* the attention pattern is any registered :mod:`attention_patterns` component, computed by any
  registered backend (``attention_backend``); the model never special-cases a pattern;
* initialisation as in §6, with the standard deviation of the linear weights read either as the
  paper prints it or as OpenAI's code computes it (``init``; see :meth:`SparseTransformer.reset_parameters`);
* optional recomputation of blocks in the backward pass (§5.4, ``checkpoint_every``).

``model(idx)`` maps bytes ``(B, T)`` to logits ``(B, T, vocab_size)`` where ``logits[:, t]``
predicts ``idx[:, t]`` from ``idx[:, :t]`` (the first from a learned start embedding).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import attention_patterns as ap
from attention_patterns import AttentionPattern
from attention_patterns.backends import AttentionBackend, create_backend

from .attention import CausalSelfAttention
from .dropout import ResidualDropout
from .embeddings import EMBEDDINGS, InputEmbedding, build_position_embedding
from .errors import warn_once
from .layers import FeedForward

log = logging.getLogger(__name__)
#: ``init`` conventions for the linear weights (§6): see :func:`linear_init_std`.
INITS = ("paper", "openai")


def linear_init_std(init: str, d_in: int) -> float:
    """Standard deviation of a linear weight with ``d_in`` inputs under the ``init`` convention (§6).

    The paper writes the weights as ``N(0, 0.125/sqrt(d_in))``. Read with the second argument as a
    standard deviation (``paper``) that is ``0.125/sqrt(d_in)``; OpenAI's own code for the model
    (``openai/distribution_augmentation``, ``linear(..., std=np.sqrt(0.125 / nx))``) draws with standard
    deviation ``sqrt(0.125/d_in)`` (``openai``), ``1/sqrt(0.125) = 2.83`` times larger for every ``d_in``.
    """
    if init == "paper":
        return 0.125 / math.sqrt(d_in)
    if init == "openai":
        return math.sqrt(0.125 / d_in)
    raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")


@dataclass
class ModelConfig:
    """Hyper-parameters of a :class:`SparseTransformer`. Defaults: a small strided model for
    Fashion-MNIST (784-byte sequences); the registry (:mod:`zoo.registry`) holds the named variants."""

    vocab_size: int = 256  # bytes
    n_layer: int = 4  # N residual blocks
    n_embd: int = 128  # d, the width of every embedding and residual stream
    n_head: int = 4  # n_h attention heads
    seq_len: int = 784  # n, the longest sequence the model accepts (position embeddings)
    # attention component config (attention_patterns.build_attention); num_heads is filled from n_head
    attention: dict[str, Any] = field(
        default_factory=lambda: {"name": "strided", "stride": 28, "mode": "split"}
    )
    # attention_patterns.backends name: how attention is computed. auto = the fastest exact backend for the
    # device (blocksparse on CPU, xformers or flex on CUDA); dense = the O(n^2) masked reference (tests)
    attention_backend: str = "auto"
    # options of that backend, e.g. {save_probs: false} or {block_size: 32} for blocksparse (auto hands
    # each option to the backend it picks)
    attention_backend_options: dict[str, Any] = field(default_factory=dict)
    embedding: str = "data"  # data | attention | absolute (§5.3)
    data_shape: list[int] = field(default_factory=lambda: [28, 28])  # one example's shape in byte order
    half_ffn: bool = False  # feed-forward width 2d instead of 4d (§6)
    half_qk: bool = False  # query/key projections to d/2 instead of d (§6)
    dropout: float = 0.0  # at the end of each residual branch only (§5.4)
    # std of the linear weights (§6): paper = 0.125/sqrt(d_in) as printed; openai = sqrt(0.125/d_in) as in
    # OpenAI's code (2.83x larger; learns faster in every measured run, docs/reproducing.md); embeddings,
    # zero logits and the 1/sqrt(2N) residual scaling are shared
    init: str = "openai"
    checkpoint_every: int = 0  # k > 0: recompute every k-th block in the backward pass (§5.4); 0 = off

    @property
    def ffn_hidden(self) -> int:
        """Feed-forward hidden width: ``2d`` when ``half_ffn`` else ``4d``."""
        return (2 if self.half_ffn else 4) * self.n_embd

    @property
    def qk_dim(self) -> int:
        """Total query/key width: ``d/2`` when ``half_qk`` else ``d``."""
        return self.n_embd // 2 if self.half_qk else self.n_embd

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python copy of the fields (for YAML, checkpoints, logging)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad value (the component is checked by :func:`build_component`)."""
        for key in ("vocab_size", "n_layer", "n_embd", "n_head", "seq_len"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.half_qk and self.n_embd % (2 * self.n_head):
            raise ValueError(
                f"half_qk projects queries and keys to n_embd/2, so n_embd={self.n_embd} must be divisible by "
                f"2 * n_head = {2 * self.n_head}"
            )
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {list(EMBEDDINGS)}, got {self.embedding!r}")
        if (
            not isinstance(self.dropout, (int, float))
            or isinstance(self.dropout, bool)
            or not 0 <= self.dropout < 1
        ):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        ce = self.checkpoint_every
        if isinstance(ce, bool) or not isinstance(ce, int) or ce < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0 (0 = off), got {ce!r}")
        if not isinstance(self.attention_backend_options, Mapping):
            raise ValueError(
                f"attention_backend_options must be a dict of backend options, got {self.attention_backend_options!r}"
            )
        if not isinstance(self.attention, Mapping) or "name" not in self.attention:
            raise ValueError(f"attention must be a dict with a 'name' key, got {self.attention!r}")


def build_component(config: ModelConfig) -> AttentionPattern:
    """The model's attention component: ``config.attention`` with ``num_heads = n_head``, checked
    against ``seq_len`` (raises ``ValueError`` naming the bad value)."""
    spec = dict(config.attention)
    heads = spec.get("num_heads")
    if heads is not None and heads != config.n_head:
        raise ValueError(f"attention.num_heads={heads} disagrees with n_head={config.n_head}; leave it unset")
    spec["num_heads"] = config.n_head
    try:
        component = ap.build_attention(spec)
    except ValueError as err:
        if "unknown key" not in str(err):
            raise
        raise ValueError(
            f"{err} (model attention config {dict(config.attention)}; switch patterns as a whole: "
            "model/attention=NAME on the command line, attention={'name': NAME, ...} in Python)"
        ) from err
    try:
        component.validate_length(config.seq_len)
    except ValueError as err:
        raise ValueError(
            f"attention {component.name!r} cannot serve seq_len={config.seq_len}: {err}"
        ) from err
    stride = spec.get("stride")
    if component.name in ("strided", "fixed") and isinstance(stride, int) and stride >= config.seq_len:
        warn_once(
            log,
            "model.attention.stride=%d >= the sequence length %d: each query's first part already covers every "
            "earlier position, so the %r pattern computes full (dense) attention; a stride near sqrt(%d) ~ %d "
            "keeps it sparse (§4.2)",
            stride,
            config.seq_len,
            component.name,
            config.seq_len,
            round(math.sqrt(config.seq_len)),
        )
    return component


class Block(nn.Module):
    """Pre-activation residual block (§5.2 eq. 12-14): ``x + dropout(attn(norm(x)))``, ``x + dropout(ff(norm(x)))``."""

    def __init__(
        self, config: ModelConfig, layer: int, component: AttentionPattern, backend: AttentionBackend
    ):
        super().__init__()
        d = config.n_embd
        self.ln_1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, config.n_head, config.qk_dim, layer, component, backend)
        self.ln_2 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, config.ffn_hidden)
        # x + dropout(branch): dropout at the end of each residual branch only (§5.4), fused with the add
        self.dropout = ResidualDropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, d)
        x = self.dropout(x, self.attn(self.ln_1(x)))  # x + dropout(attn(norm(x))), (B, T, d)
        x = self.dropout(x, self.ffn(self.ln_2(x)))  # x + dropout(ff(norm(x))), (B, T, d)
        return x


class SparseTransformer(nn.Module):
    """Autoregressive byte model of Child et al. 2019 (§5); see the module docstring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.component = build_component(config)  # which positions: shared by every block
        # how: shared by every block
        self.backend = create_backend(config.attention_backend, **dict(config.attention_backend_options))
        position = build_position_embedding(
            config.embedding, config.seq_len, config.n_embd, config.data_shape, self.component.config
        )
        self.embed_in = InputEmbedding(config.vocab_size, config.n_embd, position)
        self.blocks = nn.ModuleList(
            Block(config, layer, self.component, self.backend) for layer in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size)  # W_out (+ a bias, initialised to 0)
        self.reset_parameters()
        self._backend_logged: set[str] = set()  # devices whose resolved backend was logged

    # ------------------------------------------------------------------ initialisation (§6)
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as in §6.

        Every linear weight ``~ N(0, s(d_in))`` with ``s`` = :func:`linear_init_std` of ``config.init``
        (``paper``: ``0.125/sqrt(d_in)``; ``openai``: ``sqrt(0.125/d_in)``), additionally ``* 1/sqrt(2N)``
        for the residual output projections ``W_p`` and ``W_2`` (§5.2; OpenAI's code scales both the same
        way); biases 0; LayerNorm gain 1, bias 0; logits weight 0. Embeddings (both conventions):
        ``W_e ~ N(0, 0.125/sqrt(d))``, position tables ``~ N(0, 0.125/sqrt(d n_emb))``
        (:mod:`zoo.embeddings`). OpenAI's code gives its embeddings fixed standard deviations (0.01
        for ``W_e`` and ``0.01/sqrt(n_emb)`` for the position tables in its CIFAR-10 config, d = 256),
        within 1.3x of these values, whereas ``sqrt(0.125/d)`` would be 2.2x larger: the embedding
        formula is read as printed in both conventions.
        """
        residual_scale = 1.0 / math.sqrt(2 * self.config.n_layer)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = linear_init_std(self.config.init, module.in_features)
                if getattr(module, "is_residual_output", False):
                    std *= residual_scale
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.embed_in.reset_parameters()
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ forward
    def embed(self, idx: Tensor) -> Tensor:
        """``H_0``: embeddings of the inputs shifted right by one, ``(B, T) -> (B, T, d)`` (§5.3)."""
        return self.embed_in(idx)

    def resolved_backend(self, n: int, device: torch.device | str) -> str:
        """The backend that computes attention at length ``n`` on ``device``: ``auto -> blocksparse``
        for the auto backend (the backends it picks for the layers, comma-separated), else its name."""
        choose = getattr(self.backend, "choose", None)
        if choose is None:
            return self.config.attention_backend
        layers = range(min(self.config.n_layer, self.component.num_layers_period))
        picked = list(dict.fromkeys(choose(self.component, n, device, layer) for layer in layers))
        return f"{self.config.attention_backend} -> {', '.join(picked)}"

    def _log_backend(self, x: Tensor) -> None:
        """One INFO line per device: which backend computes the attention pattern."""
        device = str(x.device)
        if device in self._backend_logged:
            return
        self._backend_logged.add(device)
        log.info(
            "attention: pattern %r computed by backend %s on %s (n=%d)",
            self.component.name, self.resolved_backend(x.shape[1], x.device), device, x.shape[1],
        )  # fmt: skip

    def forward_embedded(self, x: Tensor) -> Tensor:
        """Blocks, final norm and logits on ``H_0``: ``(B, T, d) -> (B, T, vocab_size)`` (eq. 10-11)."""
        if not torch.compiler.is_compiling():
            self._log_backend(x)
        k = self.config.checkpoint_every
        for i, block in enumerate(self.blocks):
            if k > 0 and self.training and torch.is_grad_enabled() and i % k == 0:
                x = checkpoint(block, x, use_reentrant=False)  # recomputed in backward (§5.4)
            else:
                x = block(x)  # (B, T, d)
        return self.head(self.ln_f(x))  # (B, T, vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        """Logits ``(B, T, vocab_size)``; ``logits[:, t]`` predicts ``idx[:, t]`` from ``idx[:, :t]``."""
        return self.forward_embedded(self.embed(idx))

    def loss(self, idx: Tensor) -> Tensor:
        """Mean cross-entropy in nats per byte of ``idx`` ``(B, T)``; bits/dim = this / ln 2."""
        logits = self(idx)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), idx.reshape(-1).long())

    # ------------------------------------------------------------------ utilities
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (optionally without the token, start and position embeddings)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(p.numel() for p in self.embed_in.parameters())
        return n

    def no_weight_decay(self) -> set[str]:
        """Parameters (fnmatch patterns) that weight decay leaves alone besides biases and norm gains.

        timm's convention, read by ``timm.optim.create_optimizer_v2`` and :mod:`zoo.optim`: the token, start
        and position embeddings, so that only the Linear weights are decayed.
        """
        return {"embed_in.*"}

    def set_attention_backend(self, name: str, **options: Any) -> None:
        """Switch every block to a new backend (e.g. ``flex`` on GPU); the weights are unchanged."""
        backend = create_backend(name, **options)
        self.backend = backend
        self.config.attention_backend = name
        self.config.attention_backend_options = dict(options)
        self._backend_logged = set()
        for block in self.blocks:
            block.attn.backend = backend
