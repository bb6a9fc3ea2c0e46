"""A data set held in memory as one ``uint8`` tensor of byte sequences.

Both the Fashion-MNIST loader and the synthetic data set store their examples as a
``(N, seq_len)`` ``uint8`` tensor (1 byte per value, 47 MB for all 60,000 Fashion-MNIST images)
and hand out ``torch.long`` rows, as :mod:`zoo.data.base` requires.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


class ByteSequenceDataset(Dataset):
    """Rows of a ``(N, seq_len)`` ``uint8`` tensor as ``torch.long`` sequences of shape ``(seq_len,)``.

    ``labels`` (optional, ``(N,)``) are kept for inspection only; the generative model never sees them.
    """

    def __init__(self, data: Tensor, labels: Tensor | None = None) -> None:
        if data.dtype != torch.uint8 or data.dim() != 2:
            raise ValueError(
                f"ByteSequenceDataset needs a 2-D uint8 tensor (N, seq_len), got dtype={data.dtype} "
                f"shape={tuple(data.shape)}"
            )
        if labels is not None and labels.shape[0] != data.shape[0]:
            raise ValueError(f"labels has {labels.shape[0]} entries for {data.shape[0]} sequences")
        self.data = data  # (N, T) uint8
        self.labels = labels  # (N,) or None

    @property
    def seq_len(self) -> int:
        return int(self.data.shape[1])

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int) -> Tensor:
        return self.data[index].long()  # (T,)

    def subset(self, indices: Tensor) -> ByteSequenceDataset:
        """A new data set with the rows ``indices`` (copied, so the parent can be freed)."""
        labels = None if self.labels is None else self.labels[indices].clone()
        return ByteSequenceDataset(self.data[indices].clone(), labels)

    def __repr__(self) -> str:
        return f"ByteSequenceDataset(n={len(self)}, seq_len={self.seq_len})"
