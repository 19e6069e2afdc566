"""Where a run's training data really is: `data.path`, or the file converted from a SciFact release or
written from a hub dataset.

With `data.source_format=scifact` the validate stage converts `data.claims_file` + `data.corpus_file` into
`<run_dir>/data/<data.name>.jsonl` (atomically); with `data.path=hf://org/name` it writes the hub dataset's
split there (thinker.data.hub). Everything after it (validation, the pytest gate, training, the dataset
digest) reads that file: effective_data_path is the one place that says which.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from thinker.errors import ThinkerError
from thinker.paths import resolve_input

log = logging.getLogger("thinker")

SOURCE_FORMATS = ("scifact",)


def source_format(cfg: DictConfig) -> str | None:
    value = OmegaConf.select(cfg, "data.source_format", default=None)
    return str(value) if value else None


def written_by_validate(cfg: DictConfig) -> bool:
    """Whether the validate stage writes the run's data file (a SciFact conversion, a hub dataset)."""
    from thinker.data.hub import hub_dataset

    return source_format(cfg) is not None or hub_dataset(cfg.data.get("path")) is not None


def effective_data_path(cfg: DictConfig, run_dir: str | Path) -> Path:
    """The prompt/completion JSONL this run validates and trains on."""
    if written_by_validate(cfg):
        return Path(run_dir) / "data" / f"{cfg.data.name}.jsonl"
    return resolve_input(str(cfg.data.path))


def prepare_data(cfg: DictConfig, run_dir: str | Path) -> Path:
    """Convert the configured source if there is one (the validate stage calls this first); return the path."""
    from thinker.data.hub import hub_dataset, write_hub_dataset

    fmt = source_format(cfg)
    target = effective_data_path(cfg, run_dir)
    hub = hub_dataset(cfg.data.get("path")) if fmt is None else None
    if hub is not None:
        count = write_hub_dataset(*hub, target)
        log.info("wrote %d rows of hub dataset %s (split %s) into %s", count, *hub, target)
        return target
    if fmt is None:
        return target
    if fmt not in SOURCE_FORMATS:
        raise ThinkerError(f"data.source_format={fmt} is not one of {list(SOURCE_FORMATS)}", "data.source_format",
                           "use scifact, or null for a prompt/completion file in data.path", stage="validate")
    claims, corpus = cfg.data.claims_file, cfg.data.corpus_file
    if not claims or not corpus:
        raise ThinkerError("data.source_format=scifact needs both data.claims_file and data.corpus_file",
                           "data.claims_file / data.corpus_file", "set both paths", stage="validate")
    from thinker.data.scifact import convert_scifact

    count = convert_scifact(resolve_input(str(claims)), resolve_input(str(corpus)), target, stage="validate")
    log.info("converted %d SciFact claims from %s into %s", count, claims, target)
    return target
