"""``Cut``: one suggestion of ``suggest_cuts``, the same record for every backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

__all__ = ["Cut"]


@dataclass
class Cut:
    blob: str                    # the blob; "a,b" for a cut over several blobs
    shape: Optional[list]        # declared MultiArray shape (None when shape inference cannot tell)
    layers_before: int           # layers in the backbone
    layers_after: int            # layers in the head
    weight_bytes_before: int
    weight_bytes_total: int
    blobs: Optional[list] = None     # every blob of the cut (several when a skip connection crosses it)
    shapes: Optional[list] = None    # their shapes

    def __post_init__(self):
        if self.blobs is None:
            self.blobs = self.blob.split(",")
        if self.shapes is None:
            self.shapes = [self.shape] if len(self.blobs) == 1 else [None] * len(self.blobs)

    @property
    def weight_share(self) -> float:
        return self.weight_bytes_before / self.weight_bytes_total if self.weight_bytes_total else 0.0

    def to_json(self) -> dict:
        out = asdict(self)
        out["weight_share"] = round(self.weight_share, 6)
        return out
