"""The universal job documents of the fine-tuning job design (docs/providers.md, "Job status"): what creating a
job returns (jobId, providerJobId, estimatedCost, estimatedDuration) and what its status is (status, progress,
metrics, events, estimatedTimeRemaining), the same for every provider, for `thinker jobs status --json` and
`<run>/provider/job.json`."""

from __future__ import annotations

import time
from typing import Any

from thinker.providers.adapter import JobStatus


def create_result(run_dir: str, job_id: str, estimated_usd: float | None, estimated_seconds: float | None,
                  reattached: bool) -> dict[str, Any]:
    """jobId is thinker's own handle of the job (its run folder); providerJobId the provider's id."""
    return {"jobId": run_dir, "providerJobId": job_id, "estimatedCost": estimated_usd,
            "estimatedDuration": estimated_seconds, "reattached": reattached}


def time_remaining(status: JobStatus, started_at: float | None, now: float) -> float | None:
    """Seconds left: the provider's predicted finish where it gives one, else the elapsed time scaled by the
    progress it reports; 0 once finished; None when neither is known."""
    if status.state.finished:
        return 0.0
    if status.estimated_finish:
        return max(0.0, status.estimated_finish - now)
    progress = status.progress
    if progress and 0 < progress < 1 and started_at:
        return max(0.0, (now - started_at) * (1 - progress) / progress)
    return None


def status_document(provider: str, status: JobStatus, *, run_dir: str | None = None,
                    estimated_usd: float | None = None, started_at: float | None = None,
                    now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    started = started_at or (min(e.created_at for e in status.events) if status.events else None)
    step = max(status.metrics) if status.metrics else None
    return {
        "provider": provider, "jobId": run_dir, "providerJobId": status.job_id, "status": str(status.state),
        "providerState": status.provider_state, "progress": status.progress,
        "metrics": {"step": step, "totalSteps": status.total_steps, "trainedTokens": status.trained_tokens,
                    **(status.metrics[step] if step is not None else {})},
        "events": [{"id": e.event_id, "createdAt": e.created_at, "message": e.message, "level": e.level}
                   for e in status.events],
        "estimatedTimeRemaining": time_remaining(status, started, now),
        "estimatedCost": estimated_usd, "modelId": status.model_id, "error": status.error,
    }
