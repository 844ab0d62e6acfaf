"""What both framework adapters attach to a hit: ragkit's ids, offsets, scores and location under one prefix.

A hit's ``location`` (where in its document the chunk came from: ``{"page": 3}``, ``{"heading":
"Install > From source"}``) goes in as ``ragkit_location``, the dict as it is, when the chunk has
one; it is not spread into top-level keys such as LangChain loaders' ``page`` (0-based there, and
a key the document's own metadata may already use). The contextual header is not added: it is
derived from the document's title and the location.
"""

from __future__ import annotations

from typing import Any

from ragkit.types import Hit

__all__ = ["METADATA_PREFIX", "STAGES", "hit_fields"]

#: The prefix of the keys the adapters add to a hit's metadata (never clashes with a user's own keys).
METADATA_PREFIX = "ragkit_"
#: The per-stage scores of a :class:`~ragkit.Hit`, added when the stage scored it.
STAGES = ("dense_score", "lexical_score", "fused_score", "rerank_score")


def hit_fields(hit: Hit) -> dict[str, Any]:
    """``ragkit_doc_id``, ``ragkit_chunk_id``, offsets, rank, score, each stage's score that is set,
    and ``ragkit_location`` when the hit has a location.

    Example:
        >>> hit = Hit(id="a#0", doc_id="a", text="x", start=0, end=1, score=0.5, rank=1, dense_score=0.5)
        >>> sorted(hit_fields(hit))[:3]
        ['ragkit_chunk_id', 'ragkit_dense_score', 'ragkit_doc_id']
        >>> hit_fields(hit.model_copy(update={"location": {"page": 3}}))["ragkit_location"]
        {'page': 3}
    """
    fields: dict[str, Any] = {
        "doc_id": hit.doc_id,
        "chunk_id": hit.id,
        "start": hit.start,
        "end": hit.end,
        "rank": hit.rank,
        "score": hit.score,
    }
    fields.update({stage: getattr(hit, stage) for stage in STAGES if getattr(hit, stage) is not None})
    if hit.location:
        fields["location"] = dict(hit.location)
    return {METADATA_PREFIX + k: v for k, v in fields.items()}
