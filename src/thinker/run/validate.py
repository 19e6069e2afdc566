"""The validate stage: the dataset against its schema, then the pytest gate (docs/decisions/0005-validation-gate.md)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from thinker.data.source import prepare_data, written_by_validate
from thinker.errors import ThinkerError
from thinker.paths import resolve_input
from thinker.run.context import StageContext

log = logging.getLogger("thinker")


def environment_for_gate(cfg: DictConfig, data_path: Path) -> dict[str, str]:
    """Variables the dataset-contract tests read (tests/gate); data_path is the file really validated."""
    return {
        "THINKER_DATA_PATH": str(data_path.resolve()),
        "THINKER_DATA_FORMAT": str(cfg.data.format),
        "THINKER_PROMPT_FIELD": str(cfg.data.prompt_field),
        "THINKER_COMPLETION_FIELD": str(cfg.data.completion_field),
    }


def stage_validate(ctx: StageContext) -> None:
    from thinker.validation.dataset import FieldSpec, validate_dataset
    from thinker.validation.pytest_gate import run_pytest_gate

    cfg, record = ctx.cfg, ctx.record
    found = prepare_data(cfg, ctx.run_dir)  # converts data.source_format inputs first; else data.path
    if not cfg.validation.enabled:
        log.warning("validation.enabled=false: the dataset and pytest gate are SKIPPED (debug only)")
        record.stage_update("validate", "skipped", reason="validation.enabled=false (debug only)")
        _record_dataset_digest(ctx, found)
        return

    converted = written_by_validate(cfg)
    path = str(found) if converted else str(cfg.data.path)
    if converted:
        record.dataset_path = path  # the file this run really validates and trains on
    log.info("validating %s against the %s schema", path, cfg.data.name)
    result = validate_dataset(found, FieldSpec.from_config(cfg.data.schema), max_examples=cfg.data.max_examples,
                              max_record_chars=cfg.data.max_record_chars)
    record.dataset_sha256 = result.sha256
    record.stage_update(
        "validate", "running", dataset_records=result.records, dataset_errors=len(result.errors)
    )
    if not result.ok:
        print(result.summary(cfg.validation.max_errors_shown))
        first = result.errors[0] if result.errors else None
        raise ThinkerError(
            f"dataset failed validation with {len(result.errors)} error(s)" + (f" (first: {first})" if first else ""),
            f"data.path={path}",
            "fix the listed lines or point data.path at another file",
            stage="validate",
        )
    gate = cfg.validation.pytest
    if gate.enabled:
        outcome = run_pytest_gate([str(resolve_input(p)) for p in gate.paths], gate.markers, list(gate.args),
                                  environment_for_gate(cfg, found), quiet=not cfg.debug)
        record.stage_update("validate", "running", pytest=outcome.status, pytest_outcomes=outcome.outcomes)
        log.info("validation: %d records ok (sha256 %s); pytest gate %s: %s", result.records,
                 (result.sha256 or "")[:12], outcome.status, outcome.message)
        if outcome.status != "passed":
            raise ThinkerError(
                f"the pytest gate {outcome.status} (exit code {outcome.exit_code})"
                + (f": {outcome.message}" if outcome.message else ""),
                f"validation.pytest.paths={list(gate.paths)}",
                "fix the failing tests above (validation.pytest.enabled=false skips the gate, debug only)",
                stage="validate",
            )
    else:
        record.stage_update("validate", "running", pytest="skipped")
        log.info("validation: %d records ok (sha256 %s); pytest gate off", result.records,
                 (result.sha256 or "")[:12])
    record.stage_update("validate", "passed")


def _record_dataset_digest(ctx: StageContext, data_path: Path) -> None:
    from thinker.tracking.provenance import file_sha256

    ctx.record.dataset_sha256 = file_sha256(data_path)
    ctx.record.write()
