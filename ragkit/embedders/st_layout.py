"""The sentence-transformers layout of a model directory: module folder, pooling, normalisation, prompts.

:class:`~ragkit.embedders.TransformersEmbedder` reads it so that a sentence-transformers model gives the
vectors sentence-transformers gives (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``, ``config_sentence_transformers.json``).

Example:
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> modules = [{"type": "sentence_transformers.models.Transformer", "path": ""},
    ...            {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
    ...            {"type": "sentence_transformers.models.Normalize", "path": "2_Normalize"}]
    >>> _ = (d / "modules.json").write_text(json.dumps(modules))
    >>> (d / "1_Pooling").mkdir()
    >>> _ = (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    >>> layout = read_layout(str(d))
    >>> layout.present, layout.pooling, layout.normalize
    (True, 'mean', True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragkit.errors import ConfigError

__all__ = ["Layout", "read_layout"]

# sentence-transformers pooling modes that ragkit computes, by their names in 1_Pooling/config.json.
_ST_POOLING = {"lasttoken": "last", "mean": "mean", "cls": "cls"}
_ST_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass
class Layout:
    """What a sentence-transformers directory says; ``present`` is False for a plain checkpoint.

    Example:
        >>> Layout().present, Layout().pooling
        (False, None)
    """

    present: bool = False
    subfolder: str = ""
    pooling: str | None = None
    unsupported_pooling: Any = None
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)


def _fetch(model: str, filename: str, revision: str | None, local_files_only: bool) -> Path | None:
    """The local path of ``filename`` in a model directory or hub repo, or ``None`` when it has none."""
    if Path(model).is_dir():
        path = Path(model) / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    try:
        return Path(hf_hub_download(model, filename, revision=revision, local_files_only=local_files_only))
    except (EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled, HFValidationError):
        # Absent, or not in the cache while offline: loading the weights below gives the real error.
        return None


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_layout(model: str, revision: str | None = None, local_files_only: bool = False) -> Layout:
    """Read the sentence-transformers layout of a model directory or hub repo.

    A model without ``modules.json`` gives ``Layout(present=False)``. A module ragkit does not compute
    (``Dense``, or another module that changes the vectors) raises :class:`~ragkit.errors.ConfigError`
    rather than being ignored; an unsupported pooling mode is recorded in ``unsupported_pooling``.

    Example:
        >>> read_layout("sentence-transformers/all-MiniLM-L6-v2").pooling  # doctest: +SKIP
        'mean'
    """
    layout = Layout()
    modules_path = _fetch(model, "modules.json", revision, local_files_only)
    if modules_path is None:
        return layout
    layout.present = True
    for module in _read_json(modules_path):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = str(module.get("path", "")).strip("/")
        if kind == "Transformer":
            layout.subfolder = folder
            cfg_name = f"{folder}/sentence_bert_config.json" if folder else "sentence_bert_config.json"
            cfg_path = _fetch(model, cfg_name, revision, local_files_only)
            if cfg_path is not None:
                cfg = _read_json(cfg_path)
                layout.max_seq_length = cfg.get("max_seq_length")
                layout.do_lower_case = bool(cfg.get("do_lower_case", False))
        elif kind == "Pooling":
            cfg_path = _fetch(model, f"{folder}/config.json", revision, local_files_only)
            cfg = _read_json(cfg_path) if cfg_path is not None else {}
            mode = cfg.get("pooling_mode")
            if mode is None:
                active = [m for k, m in _ST_LEGACY_POOLING.items() if cfg.get(k)]
                mode = active if len(active) != 1 else active[0]
            if isinstance(mode, list) and len(mode) == 1:
                mode = mode[0]
            if isinstance(mode, str) and mode in _ST_POOLING:
                layout.pooling = _ST_POOLING[mode]
            else:
                layout.unsupported_pooling = mode
        elif kind == "Normalize":
            layout.normalize = True
        else:
            # A Dense or other module changes the vectors; ignoring it would give silently wrong ones.
            raise ConfigError(
                f"{model}: the sentence-transformers module {module.get('type')!r} is not supported by "
                "TransformersEmbedder (it handles Transformer, Pooling and Normalize)"
            )
    st_path = _fetch(model, "config_sentence_transformers.json", revision, local_files_only)
    if st_path is not None:
        prompts = _read_json(st_path).get("prompts") or {}
        layout.prompts = {k: v for k, v in prompts.items() if isinstance(v, str)}
    return layout
