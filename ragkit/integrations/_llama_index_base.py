"""The halves of :mod:`ragkit.integrations.llama_index` that need no LlamaIndex base class: hits as
nodes (:func:`hit_to_node`) and LlamaIndex ``MetadataFilters`` as ragkit filter dicts
(:func:`to_ragkit_filter`). Import them from :mod:`ragkit.integrations.llama_index`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ragkit._deps import require
from ragkit.errors import InputTypeError, InvalidInputError
from ragkit.filters import parse_filter
from ragkit.integrations._hits import METADATA_PREFIX, hit_fields
from ragkit.types import Hit

try:
    from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
except ImportError:
    # Not installed: a MissingDependencyError naming the extra. Installed but broken or of an
    # incompatible release: the original error.
    require("llama_index.core", purpose="ragkit.integrations.llama_index")
    raise

__all__ = ["METADATA_PREFIX", "hit_to_node", "to_ragkit_filter"]


# ------------------------------------------------------------------------------------------ filters

_COMPARISON = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$in",  # a list-valued field: any element is one of the values
}


def _one_filter(f: MetadataFilter) -> dict[str, Any]:
    op = FilterOperator(f.operator)
    if op in _COMPARISON:
        return {f.key: {_COMPARISON[op]: f.value}}
    if op == FilterOperator.CONTAINS:  # a list-valued field holds the value (ragkit's equality)
        return {f.key: {"$eq": f.value}}
    if op == FilterOperator.ALL:  # a list-valued field holds every one of the values
        values = f.value if isinstance(f.value, list) else [f.value]
        if not values:
            return {}
        return {"$and": [{f.key: {"$eq": v}} for v in values]}
    raise InvalidInputError(
        f"ragkit filters cannot express LlamaIndex's {op.name} operator (on {f.key!r}): use EQ, NE, GT, "
        "GTE, LT, LTE, IN, NIN, ANY, ALL or CONTAINS, or pass a ragkit filter dict (ragkit.filters)"
    )


def to_ragkit_filter(
    filters: MetadataFilters | MetadataFilter | Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """A ragkit filter dict (:mod:`ragkit.filters`) for LlamaIndex ``MetadataFilters``.

    A ragkit dict (or ``None``) is returned as a validated copy. Operators: ``EQ`` (and
    ``ExactMatchFilter``) → ``$eq``, ``NE`` → ``$ne``, ``GT``/``GTE``/``LT``/``LTE``, ``IN`` → ``$in``,
    ``NIN`` → ``$nin``, ``ANY`` → ``$in``, ``ALL`` → one ``$eq`` per value, ``CONTAINS`` → ``$eq``
    (ragkit's equality on a list-valued field: some element equals; on a string field it is
    equality, not a substring test). Conditions: ``AND`` → ``$and``, ``OR`` → ``$or``, ``NOT``
    (none of the filters) → ``$nor``; ``MetadataFilters`` nest. An empty ``MetadataFilters`` matches
    everything, as in LlamaIndex.

    ragkit's semantics apply: a missing field matches no condition (``NE`` and ``NIN`` included:
    write ``{"$not": {...}}`` in a dict filter to match documents without the field), comparison is
    type-sensitive, and a dotted key reaches a nested field.

    Raises:
        InvalidInputError: ``TEXT_MATCH``, ``TEXT_MATCH_INSENSITIVE`` and ``IS_EMPTY`` (ragkit has no
            substring test, and cannot tell an empty list), or a filter ragkit refuses.
        InputTypeError: not a filter.

    Example:
        >>> from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters
        >>> to_ragkit_filter(MetadataFilters(filters=[
        ...     MetadataFilter(key="lang", value="en"),
        ...     MetadataFilter(key="year", value=2020, operator=FilterOperator.GTE),
        ... ]))
        {'$and': [{'lang': {'$eq': 'en'}}, {'year': {'$gte': 2020}}]}
        >>> to_ragkit_filter(MetadataFilters(
        ...     filters=[MetadataFilter(key="lang", value=["de", "fr"], operator="in")], condition="not"))
        {'$nor': [{'lang': {'$in': ['de', 'fr']}}]}
    """
    if filters is None:
        return None
    if isinstance(filters, MetadataFilter):
        out = _one_filter(filters)
    elif isinstance(filters, MetadataFilters):
        parts = [to_ragkit_filter(f) or {} for f in filters.filters]
        if not parts:
            return None
        condition = FilterCondition(filters.condition or FilterCondition.AND)
        key = {FilterCondition.AND: "$and", FilterCondition.OR: "$or", FilterCondition.NOT: "$nor"}[condition]
        out = {key: parts}
    elif isinstance(filters, Mapping):
        out = dict(filters)
    else:
        raise InputTypeError(
            f"filter must be LlamaIndex MetadataFilters or a ragkit filter dict, got {type(filters).__name__}"
        )
    parse_filter(out)  # refused here, not at the first query
    return out


# -------------------------------------------------------------------------------------------- nodes


def hit_to_node(hit: Hit) -> NodeWithScore:
    """One ragkit hit as a LlamaIndex ``NodeWithScore``.

    The node's id is the chunk id, its ``ref_doc_id`` (the ``SOURCE`` relationship) the document
    id, ``start_char_idx``/``end_char_idx`` the chunk's offsets in the document's text, and its
    metadata the document's metadata plus the ``ragkit_`` keys of :data:`METADATA_PREFIX` (which
    LlamaIndex leaves out of the text it shows an LLM or embeds). The score is ``hit.score``.

    Example:
        >>> from ragkit import Hit
        >>> node = hit_to_node(Hit(id="a#0", doc_id="a", text="Paris.", start=0, end=6,
        ...                        metadata={"lang": "en"}, score=0.9, rank=1, dense_score=0.9))
        >>> node.node_id, node.node.ref_doc_id, node.score, node.metadata["lang"]
        ('a#0', 'a', 0.9, 'en')
        >>> node.metadata["ragkit_dense_score"], node.metadata["ragkit_start"]
        (0.9, 0)
    """
    if not isinstance(hit, Hit):
        raise InputTypeError(f"hit_to_node() takes a ragkit Hit, got {type(hit).__name__}")
    ours = hit_fields(hit)
    node = TextNode(
        id_=hit.id,
        text=hit.text,
        start_char_idx=hit.start,
        end_char_idx=hit.end,
        metadata={**hit.metadata, **ours},
        excluded_embed_metadata_keys=list(ours),
        excluded_llm_metadata_keys=list(ours),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.doc_id)},
    )
    return NodeWithScore(node=node, score=hit.score)
