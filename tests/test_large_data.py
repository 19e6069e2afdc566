"""Data that need not fit in memory (docs/data.md, "Large files and hub datasets"): the example reader and
the validator hold a file's index, not its text; training tokenises the split chunk by chunk and a run capped
by trainer.max_steps reads only the chunks its steps need; the shipped files are tokenised and packed as one
whole, as before; a hub dataset by id (data.path=hf://org/name) validates and trains from a local datasets
cache with HF_HUB_OFFLINE=1, never writing to the home folder."""

from __future__ import annotations

import json
import random
import shutil
import tracemalloc
from pathlib import Path

import pytest
from conftest import clean_env, compose, launch
from test_tokenize_packing import CharTokenizer

from thinker.data.examples import split_examples
from thinker.data.hub import hub_dataset
from thinker.data.prepare import make_rows, tokenize_all, tokenized_data
from thinker.errors import ExitCode, ThinkerError
from thinker.tasks import task_of
from thinker.validation.dataset import FieldSpec, validate_dataset

WORDS = "the cell protein gene expression increases reduces patients study trial risk dose cohort".split()


def write_records(path: Path, count: int, words: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps({"prompt": f"{i}: " + " ".join(rng.choices(WORDS, k=words)),
                                "completion": "CLAIM[c1]: " + " ".join(rng.choices(WORDS, k=8))}) + "\n")
            if i % 7 == 3:
                f.write("\n")  # blank lines are skipped, not counted
    return path


# ---------------------------------------------------------------- bounded memory


@pytest.fixture(scope="module")
def file_50mb(tmp_path_factory) -> Path:
    return write_records(tmp_path_factory.mktemp("big") / "big.jsonl", 10_000, 800)  # ~5 KB a record


def peak_bytes(work) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_example_reader_holds_an_index_not_the_file(file_50mb):
    size = file_50mb.stat().st_size
    assert size > 45_000_000
    cfg = compose(["data=jsonl", f"data.path={file_50mb}"])
    seen = {}

    def read_all():
        examples = task_of(cfg.data).read(file_50mb, cfg.data)
        seen["count"] = sum(1 for _ in examples)
        seen["last"] = examples[len(examples) - 1].prompt
        seen["middle"] = examples[5_000].prompt

    peak = peak_bytes(read_all)
    assert seen["count"] == 10_000 and seen["last"].startswith("9999: ") and seen["middle"].startswith("5000: ")
    assert peak < size / 50, f"reading {size:,} bytes peaked at {peak:,} bytes"


def test_the_validator_holds_one_line_at_a_time(file_50mb):
    size = file_50mb.stat().st_size
    fields = FieldSpec.from_config(compose(["data=jsonl", f"data.path={file_50mb}"]).data.schema)
    results = []
    peak = peak_bytes(lambda: results.append(validate_dataset(file_50mb, fields)))
    assert results[0].ok and results[0].records == 10_000
    assert peak < size / 50, f"validating {size:,} bytes peaked at {peak:,} bytes"


# ---------------------------------------------------------------- chunked tokenisation


def old_tokenized(cfg, path, packed):
    """What tokenized_data computed before chunks: the whole file in lists, split, tokenised and packed."""
    task = task_of(cfg.data)
    examples = list(task.read(path, cfg.data, cfg.data.max_examples))
    train, val = split_examples(examples, float(cfg.data.validation_split), int(cfg.seed))
    args = (int(cfg.trainer.max_seq_length), cfg.data, False)
    train_tok = [t for t in tokenize_all(task, CharTokenizer(), train, *args) if t.trained_tokens]
    val_tok = [t for t in tokenize_all(task, CharTokenizer(), val, *args) if t.trained_tokens]
    return train_tok, val_tok, make_rows(train_tok, args[0], packed), make_rows(val_tok, args[0], packed)


@pytest.mark.parametrize("data", ["sample", "gsm8k"])  # chat data needs a tokenizer with a chat template
def test_the_shipped_data_is_tokenised_and_packed_as_one_whole_as_before(data):
    cfg = compose([f"data={data}"])
    path = Path(__file__).parents[1] / str(cfg.data.path)
    got = tokenized_data(cfg, path, CharTokenizer(), packed=True)
    train_tok, val_tok, train_rows, val_rows = old_tokenized(cfg, path, packed=True)
    assert got.train == train_tok and got.val == val_tok
    assert got.train_rows == train_rows and got.val_rows == val_rows


def test_a_run_capped_by_max_steps_tokenises_only_the_chunks_its_steps_need(tmp_path, monkeypatch):
    import thinker.data.prepare as prepare

    path = write_records(tmp_path / "d.jsonl", 100, 5)
    monkeypatch.setattr(prepare, "CHUNK_EXAMPLES", 20)
    common = ["data=jsonl", f"data.path={path}", "trainer.batch_size=4", "trainer.grad_accum=1"]
    capped = tokenized_data(compose([*common, "trainer.max_steps=2"]), path, CharTokenizer(), packed=False)
    whole = tokenized_data(compose([*common, "trainer.max_steps=-1"]), path, CharTokenizer(), packed=False)
    assert whole.read_train_examples == 90 and len(whole.train_rows) == 90  # validation_split 0.1
    assert capped.read_train_examples == 20 and capped.split_train_examples == 90  # 2 x 4 rows: the first chunk
    assert capped.train_rows == whole.train_rows[:20]  # the same seeded order, cut after the chunk
    assert capped.val_rows == whole.val_rows


# ---------------------------------------------------------------- hub datasets by id


@pytest.mark.parametrize(("path", "expected"), [
    ("hf://org/name", ("org/name", "train")),
    ("hf://org/name:test", ("org/name", "test")),
    ("hf://datasets/org/name", ("org/name", "train")),
    ("hf://squad", ("squad", "train")),
    ("data/sample/claims.jsonl", None),
])
def test_hub_ids(path, expected):
    assert hub_dataset(path) == expected


def test_a_hub_path_that_is_not_an_id_is_refused():
    with pytest.raises(ThinkerError, match="not a hub dataset id"):
        hub_dataset("hf://org/name/extra")


def fill_hub_cache(cache: Path, repo_id: str, records: list[dict], tmp: Path) -> None:
    """Put `records` where `datasets` finds hub dataset `repo_id` offline: built by its own JSON builder, then
    moved to the layout load_dataset looks up (<cache>/<org>___<name>/default/<version>/<hash>/)."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.json.json import Json

    namespace, name = repo_id.split("/")
    source = tmp / f"{name}-source.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    build = tmp / f"{name}-build"
    Json(cache_dir=str(build), dataset_name=name, hash="0" * 16,
         data_files=DataFilesDict.from_patterns({"train": [str(source)]})).download_and_prepare()
    (built,) = (build / name).glob("default-*")
    shutil.move(str(built), str(cache / f"{namespace}___{name}" / "default"))


RECORDS = [{"prompt": f"Claim {i}", "completion": f"CLAIM[c1]: finding {i}"} for i in range(12)]


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    cache, home = root / "cache", root / "home"
    cache.mkdir()
    home.mkdir()
    fill_hub_cache(cache, "org/claims", RECORDS, root)
    fill_hub_cache(cache, "org/broken", [*RECORDS[:2], {"prompt": "no completion"}, *RECORDS[3:]], root)
    env = clean_env(HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(cache), HOME=str(home),
                    MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}")
    for key in ("HF_HOME", "XDG_CACHE_HOME", "HF_HUB_CACHE"):
        env.pop(key, None)
    return root, env


def run_folder(cwd: Path) -> Path:
    return next(p.parent for p in (cwd / "outputs").rglob("run_record.json"))


def test_a_hub_dataset_validates_offline_from_the_local_cache(hub_env, tmp_path):
    root, env = hub_env
    out = launch(["stage=validate", "data=jsonl", "data.path=hf://org/claims", "validation.pytest.enabled=false"],
                 tmp_path, env)
    assert out.returncode == 0, out.stderr[-2000:]
    written = run_folder(tmp_path) / "data" / "jsonl.jsonl"
    assert [json.loads(line) for line in written.read_text().splitlines()] == RECORDS
    assert not any((root / "home").iterdir())  # nothing written to the home folder


def test_a_bad_hub_record_is_named_by_its_line(hub_env, tmp_path):
    _root, env = hub_env
    out = launch(["stage=validate", "data=jsonl", "data.path=hf://org/broken", "validation.pytest.enabled=false"],
                 tmp_path, env)
    assert out.returncode == ExitCode.VALIDATE, out.stderr[-2000:]
    assert "line 3" in out.stdout + out.stderr


def test_a_hub_dataset_that_is_not_cached_offline_is_one_error_line_at_config_check(hub_env, tmp_path):
    _root, env = hub_env
    out = launch(["stage=validate", "data=jsonl", "data.path=hf://org/missing", "validation.pytest.enabled=false"],
                 tmp_path, env)
    assert out.returncode == ExitCode.CONFIG
    errors = [line for line in out.stderr.splitlines() if line.startswith("[thinker] error:")]
    assert len(errors) == 1 and "hub dataset org/missing" in errors[0] and "Traceback" not in out.stderr


def test_writing_a_hub_dataset_imports_no_torch_transformers_or_mlflow(hub_env, tmp_path):
    # the validate stage writes it, and validating must stay light (tests/test_lazy_imports.py)
    import subprocess
    import sys

    _root, env = hub_env
    code = ("import sys; from pathlib import Path; from thinker.data.hub import write_hub_dataset; "
            f"n = write_hub_dataset('org/claims', 'train', Path({str(tmp_path / 'out.jsonl')!r})); "
            "print(n, [m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split()[:2] == ["12", "[]"], out.stderr[-2000:]


@pytest.mark.slow
def test_a_hub_dataset_trains_offline(hub_env, tmp_path):
    _root, env = hub_env
    out = launch(["stage=train", "data=jsonl", "data.path=hf://org/claims", "method=lora", "trainer.max_steps=2",
                  "trainer.evaluations=0", "validation.pytest.enabled=false"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = run_folder(tmp_path)
    record = json.loads((folder / "run_record.json").read_text())
    assert record["dataset_path"].endswith("data/jsonl.jsonl")
    assert (folder / "weights").is_dir()


def test_the_config_check_knows_which_hub_ids_load_offline(hub_env, tmp_path):
    from thinker.config.check import violations

    root, _env = hub_env
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(root / "cache")}

    def problems(path, env):
        return [v.what for v in violations(compose(["data=jsonl", f"data.path={path}"]), env)]

    assert not any("hub" in what for what in problems("hf://org/claims", offline))
    assert any("hub dataset org/missing is not in the datasets cache" in w for w in problems("hf://org/missing", offline))
    assert not any("hub" in what for what in problems("hf://org/missing", {}))  # online: the hub may have it
    assert any("not a hub dataset id" in what for what in problems("hf://org/name/extra", {}))
