"""What outside thinker.tasks needs to know about data asks the task (docs/data.md, "Data tasks"), so a task of
one's own (data.task) is treated like the built-in one it resembles: here, a chat task under another name."""

from __future__ import annotations

from conftest import compose

from thinker.tasks.chat import ChatTask


class DialogueTask(ChatTask):
    name = "dialogue"  # a chat format of one's own: nothing outside the task may look for the name "chat"


TASK = DialogueTask()


def test_a_chat_task_of_ones_own_needs_the_template_tokenizer_to_be_counted():
    from thinker.estimate.cost import _needs_template

    assert _needs_template(compose(["data=chat"]))
    assert _needs_template(compose(["data=chat", "+data.task=test_task_declarations"]))
    assert not _needs_template(compose(["data=sample"]))
