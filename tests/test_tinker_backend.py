"""backend=tinker without a service: what the config check refuses, the Datums it builds from the shared
training rows, and checkpoints.jsonl. The runs against `thinker tinker-serve` are in test_tinker_runs.py."""

from __future__ import annotations

import json

import pytest
from conftest import compose

from thinker.backends.tinker.datums import LossSums, Targets, step_targets, to_datums
from thinker.backends.tinker.ledger import CheckpointLedger, SavedState
from thinker.config.check import check_config
from thinker.data.packing import Row
from thinker.data.tokenize import IGNORE_INDEX
from thinker.errors import ExitCode, ThinkerError

KEY = {"TINKER_API_KEY": "tml-abcdefghijklmnop"}


# ---------------------------------------------------------------- config


def test_backend_tinker_chooses_lora_with_tinkers_fixed_alpha_unless_told_otherwise():
    cfg = compose(["backend=tinker"])
    assert str(cfg.method.name) == "lora" and cfg.method.alpha == 32.0
    assert str(compose([]).method.name) == "qlora" and compose(["method=lora"]).method.alpha == 16.0
    assert str(compose(["backend=tinker", "method=full"]).method.name) == "full"  # named: kept, then refused


def test_a_sweep_over_backends_gives_each_job_its_backends_default_method():
    from conftest import CONF
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        jobs = {b: hydra_compose(config_name="config", overrides=[f"backend={b}"]) for b in ("local", "tinker")}
    assert {b: str(c.method.name) for b, c in jobs.items()} == {"local": "qlora", "tinker": "lora"}


@pytest.mark.parametrize("overrides, words", [
    (["method=qlora"], "backend=tinker cannot train with method=qlora"),
    (["method=full"], "backend=tinker cannot train with method=full"),
    (["method.alpha=16"], "fixed scaling of alpha=32"),
    (["method.dropout=0.1"], "no dropout"),
    (["method.target_modules='q_proj,v_proj'"], "by kind"),
    (["optimizer=sgd"], "AdamW"),
    (["backend.options.in_flight=0"], "in_flight"),
])
def test_settings_tinker_cannot_carry_are_refused_at_config_check(overrides, words):
    cfg = compose(["backend=tinker", "stage=validate", *overrides])
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env=KEY)
    assert info.value.exit_code == ExitCode.CONFIG and words in str(info.value)


def test_a_key_that_is_not_a_tinker_key_is_refused_without_being_printed():
    cfg = compose(["backend=tinker", "stage=validate"])
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env={"TINKER_API_KEY": "sk-notatinkerkey123"})
    assert "tml-" in str(info.value) and "sk-notatinkerkey123" not in str(info.value)


def test_validate_does_not_ask_the_service_but_train_does():
    cfg = compose(["backend=tinker", "stage=validate"])
    check_config(cfg, env={**KEY, "TINKER_BASE_URL": "http://127.0.0.1:9"})  # nothing listens there
    with pytest.raises(ThinkerError) as info:
        check_config(compose(["backend=tinker", "stage=train"]), env={**KEY, "TINKER_BASE_URL": "http://127.0.0.1:9"})
    assert "does not answer" in str(info.value) and "thinker tinker-serve" in info.value.fix


def test_backend_base_url_wins_over_the_environment():
    from thinker.backends import instantiate_backend

    backend = instantiate_backend(compose(["backend=tinker", "backend.base_url=http://127.0.0.1:1234/"]))
    assert backend.url({"TINKER_BASE_URL": "http://elsewhere:1"}) == "http://127.0.0.1:1234"
    assert instantiate_backend(compose(["backend=tinker"])).url({"TINKER_BASE_URL": "http://h:2/"}) == "http://h:2"


# ---------------------------------------------------------------- datums


def row(ids: list[int], labels: list[int], weights: list[float]) -> Row:
    return Row(input_ids=ids, labels=labels, weights=weights, position_ids=list(range(len(ids))), n_examples=1)


def test_targets_shift_by_one_and_drop_the_prompt():
    r = row([10, 11, 12, 13, 14], [IGNORE_INDEX, IGNORE_INDEX, 12, 13, 14], [0.0, 0.0, 1.0, 2.0, 1.0])
    t = Targets.of(r)
    assert t.inputs == [10, 11, 12, 13] and t.targets == [11, 12, 13, 14]
    assert t.mask == [False, True, True, True] and t.weights == [0.0, 1.0, 2.0, 1.0]


def test_training_datums_carry_weights_normalised_over_the_whole_step():
    rows = [row([1, 2, 3], [IGNORE_INDEX, 2, 3], [0.0, 1.0, 1.0]), row([4, 5, 6, 7], [IGNORE_INDEX] * 2 + [6, 7],
                                                                      [0.0, 0.0, 1.0, 2.0])]
    datums = to_datums(step_targets(rows), normalise=True)
    weights = [d.loss_fn_inputs["weights"].tolist() for d in datums]  # float32 on the wire
    assert weights == [pytest.approx([0.2, 0.2]), pytest.approx([0.0, 0.2, 0.4])]
    assert [d.loss_fn_inputs["target_tokens"].tolist() for d in datums] == [[2, 3], [5, 6, 7]]
    assert [d.model_input.to_ints() for d in datums] == [[1, 2], [4, 5, 6]]
    raw = to_datums(step_targets(rows), normalise=False)
    assert [d.loss_fn_inputs["weights"].tolist() for d in raw] == [[1.0, 1.0], [0.0, 1.0, 2.0]]


def test_loss_sums_match_the_local_definitions():
    t = Targets([1, 2, 3], [2, 3, 4], [0.0, 1.0, 3.0], [False, True, True])
    sums = LossSums()
    sums.add([t], [[-9.0, -1.0, -2.0]])  # the masked prompt position never counts
    assert sums.tokens == 2 and sums.mean == pytest.approx(1.5)
    assert sums.weighted_mean == pytest.approx((1.0 * 1.0 + 3.0 * 2.0) / 4.0)


# ---------------------------------------------------------------- checkpoints.jsonl


def test_the_ledger_keeps_whole_lines_and_knows_the_last_state(tmp_path):
    ledger = CheckpointLedger(tmp_path)
    assert ledger.last_state() is None
    ledger.append(SavedState(4, "tinker://m:train:0/weights/step000004", 100))
    ledger.append(SavedState(8, "tinker://m:train:0/weights/step000008", 200))
    ledger.append(SavedState(8, "tinker://m:train:0/sampler_weights/final", 200, kind="sampler"))
    with ledger.file.open("a") as f:
        f.write('{"step": 12, "path": "tinker://torn')  # a crash mid-write
    last = ledger.last_state()
    assert last is not None and (last.step, last.trained_tokens) == (8, 200) and last.path.endswith("step000008")
    assert [e.kind for e in ledger.entries()] == ["state", "state", "sampler"]
    assert all(json.loads(line)["time"] > 0 for line in ledger.file.read_text().splitlines()[:3])
    ledger.reset()
    assert ledger.last_state() is None and ledger.file.with_suffix(".jsonl.previous").is_file()


# ---------------------------------------------------------------- waiting on a service that is gone


class Healthz:
    """A loopback server whose /api/v1/healthz answers 200, until stop()."""

    def __init__(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_wait_outlasts_slow_results_while_the_service_answers_and_gives_up_once_it_does_not():
    import concurrent.futures
    import threading
    import time

    from thinker.backends.tinker.watch import ServiceLost, ServiceWatch

    service = Healthz()
    watch = ServiceWatch(service.url, slice_s=0.2)
    slow: concurrent.futures.Future = concurrent.futures.Future()
    threading.Timer(1.5, slow.set_result, ["done"]).start()  # several slices, each followed by a probe
    assert watch.result(slow) == "done"

    service.stop()  # the service is gone: a result that never comes is given up on, not awaited forever
    never: concurrent.futures.Future = concurrent.futures.Future()
    started = time.monotonic()
    with pytest.raises(ServiceLost) as lost:
        watch.result(never)
    assert time.monotonic() - started < 5  # a slice, then two refused probes a second apart
    assert lost.value.silent_since <= started and never.cancelled()
    with pytest.raises(ServiceLost):  # a synchronous SDK call that hangs, on a daemon thread
        watch.call(lambda: time.sleep(3600))
    failing: concurrent.futures.Future = concurrent.futures.Future()
    failing.set_exception(TimeoutError("the operation's own timeout"))
    with pytest.raises(TimeoutError, match="own timeout"):  # passed on, not taken for a wait of ours
        watch.result(failing)
