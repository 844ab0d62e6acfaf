"""Adapters that plug ragkit into other frameworks, each behind an optional extra.

- :mod:`ragkit.integrations.langchain` (``pip install 'ragkit[langchain]'``)
- :mod:`ragkit.integrations.llama_index` (``pip install 'ragkit[llama-index]'``)

Importing this package imports neither framework.
"""

from __future__ import annotations

__all__: list[str] = []
