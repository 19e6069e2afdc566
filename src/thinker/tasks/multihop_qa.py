"""HotpotQA-style multi-hop question answering: pretraining data only (method=pretrain reads it with
thinker.pretraining's processors; docs/decisions/0010-cognate-pretraining-path.md)."""

from __future__ import annotations

from thinker.tasks.base import Task


class MultihopQATask(Task):
    name = "multihop_qa"
    fine_tunes = False
    pretrains = True


TASK = MultihopQATask()
