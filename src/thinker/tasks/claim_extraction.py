"""SciFact-style claim extraction: prompt/completion records whose completion lists CLAIM[...] lines. The
CLAIM[c1] line and evidence lines weigh data.claim_c1_weight / data.evidence_weight in the loss
(docs/decisions/0011-same-training-on-every-backend.md); the eval stage scores SciFact claims."""

from __future__ import annotations

from thinker.tasks.prompt_completion import PromptCompletionTask

CLAIM_FORMAT = "claim_extraction"


class ClaimExtractionTask(PromptCompletionTask):
    name = CLAIM_FORMAT
    scores_claims = True

    @property
    def eval_metrics(self) -> tuple[str, ...]:
        from thinker.evaluation.metrics import METRIC_NAMES

        return tuple(METRIC_NAMES)


TASK = ClaimExtractionTask()
