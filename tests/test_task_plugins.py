"""Data tasks are plug-ins (thinker.tasks): data.format chooses a built-in one, and a module of the user's own
on PYTHONPATH, named by data.task, reads, tokenises and evaluates the data instead, as tests/test_backend_interface.py
shows for backends. The module below lives outside the project, as a user's would."""

from __future__ import annotations

import json

import pytest
from conftest import compose
from test_tokenize_packing import CharTokenizer

from thinker.config.check import check_config
from thinker.errors import ExitCode, ThinkerError
from thinker.tasks import BUILTIN_TASKS, task_of

QA_MODULE = '''
from thinker.data.examples import Example
from thinker.tasks.base import read_jsonl
from thinker.tasks.prompt_completion import PromptCompletionTask


class QuestionAnswerTask(PromptCompletionTask):
    """{"q": ..., "a": ...} records; the answer is trained, upper-cased (so a test can tell it ran)."""

    name = "qa"
    default_objective = "heldout_loss"

    def read(self, path, data, limit=None):
        return [Example("Q: " + r["q"], r["a"].upper()) for r in read_jsonl(path, limit)]


TASK = QuestionAnswerTask()
'''


@pytest.fixture
def qa_task(tmp_path, monkeypatch):
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "qa_task.py").write_text(QA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"q": f"what is {i}?", "a": f"it is {i}"}) + "\n" for i in range(10)))
    return ["data=jsonl", f"data.path={data}", "data.format=qa", "data.task=qa_task", "stage=train"]


@pytest.mark.parametrize("fmt", sorted(BUILTIN_TASKS))
def test_data_format_chooses_its_builtin_task(fmt):
    assert task_of(compose([f"data.format={fmt}"]).data).name == fmt


def test_a_task_module_of_your_own_reads_and_tokenises_the_training_data(qa_task, tmp_path):
    from thinker.data.prepare import prepare_training_data

    cfg = compose(qa_task)
    check_config(cfg, env={})  # a format no backend lists is trained when data.task names its task
    assert task_of(cfg.data).name == "qa"
    data = prepare_training_data(cfg, tmp_path, CharTokenizer(), packed=False)
    assert data.stats.examples == 9 and len(data.val) == 1  # data.validation_split=0.1 of 10
    first = data.train[0]
    trained = "".join(chr(t - 10) for t, label in zip(first.input_ids, first.labels, strict=True)
                      if label != -100 and t != CharTokenizer.eos_token_id)
    assert trained.startswith("IT IS ") and "Q: what is" in "".join(chr(t - 10) for t in first.input_ids[:-1])


def test_the_search_objective_asks_the_task(qa_task):
    from thinker.sweeps.search import produced_metrics

    produced, _missing = produced_metrics(compose([*qa_task[:-1], "stage=run"]))
    assert "heldout_loss" in produced and "c1_exact_match_rate" not in produced


@pytest.mark.parametrize(("module", "message"), [
    ("no_such_task_module", "data.task=no_such_task_module cannot be imported"),
    ("json", "data.task=json defines no TASK"),
])
def test_a_task_module_that_is_not_one_is_one_config_error(module, message):
    cfg = compose(["data=sample", f"data.task={module}"])
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env={})
    assert info.value.exit_code == ExitCode.CONFIG and message in info.value.what


def test_a_task_of_your_own_is_part_of_the_fingerprint(qa_task):
    from thinker.tracking.fingerprint import config_fingerprint

    with_task = compose(qa_task)
    without = compose([o for o in qa_task if not o.startswith("data.task=")])
    assert config_fingerprint(with_task) != config_fingerprint(without)
