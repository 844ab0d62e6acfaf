"""Pooling: one vector per sequence from a transformer's last hidden states.

Example:
    >>> import torch
    >>> hidden = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    >>> mask = torch.tensor([[1, 1, 0]])
    >>> pool(hidden, mask, "mean").tolist(), pool(hidden, mask, "cls").tolist()
    ([[2.0, 3.0, 4.0, 5.0]], [[0.0, 1.0, 2.0, 3.0]])
"""

from __future__ import annotations

from typing import Any

__all__ = ["pool"]


def pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """Pool ``hidden`` (batch x tokens x dim) into float32 vectors, whatever the model's dtype.

    ``"last"`` takes the last position (sequences are left-padded for it), ``"cls"`` the first, and
    ``"mean"`` averages the positions that ``mask`` marks as real tokens.
    """
    if pooling == "last":
        return hidden[:, -1].float()
    if pooling == "cls":
        return hidden[:, 0].float()
    m = mask.unsqueeze(-1).float()
    return (hidden.float() * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
