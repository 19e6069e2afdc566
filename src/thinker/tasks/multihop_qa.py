"""HotpotQA-style multi-hop question answering: pretraining data only (method=pretrain trains on its records
as thinker.data.reasoning makes HotpotQA ones; docs/decisions/0010-cognate-pretraining-path.md)."""

from __future__ import annotations

from thinker.data.reasoning import hotpotqa_answer_correct, hotpotqa_example
from thinker.tasks.base import Task


class MultihopQATask(Task):
    name = "multihop_qa"
    fine_tunes = False
    pretrains = True
    pretraining_example = staticmethod(hotpotqa_example)
    pretraining_answer_correct = staticmethod(hotpotqa_answer_correct)


TASK = MultihopQATask()
