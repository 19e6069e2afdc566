"""Data parallel without processes: how the loader shards packed rows, how a rank is told apart from the
environment, and what the config check refuses before any rank starts. The real 2-process runs are in
tests/test_ddp_runs.py (slow)."""

from __future__ import annotations

import pytest
from conftest import clean_env, compose, launch

from thinker.backends.local.ranks import external_launcher, is_rank_zero, rank_name, worker_overrides
from thinker.data.batches import ResumableLoader, shard_indices
from thinker.data.packing import Row
from thinker.data.tokenize import IGNORE_INDEX
from thinker.errors import ExitCode, ThinkerError


def rows(n: int) -> list[Row]:
    """Row i holds the token i + 1 (so a batch names its rows), every label trained with weight 1."""
    return [Row(input_ids=[i + 1, i + 1], labels=[i + 1, i + 1], weights=[1.0, 1.0], position_ids=[0, 1],
                n_examples=1) for i in range(n)]


def loaders(n_rows: int, ranks: int, batch_size: int = 2, grad_accum: int = 2, seed: int = 3, epoch: int = 0,
            shuffle: bool = True) -> list[ResumableLoader]:
    data = rows(n_rows)
    return [ResumableLoader(data, batch_size, 0, packed=True, seed=seed, shuffle=shuffle,
                            current_epoch=lambda: epoch, micro_batches_per_step=grad_accum, num_replicas=ranks,
                            rank=r) for r in range(ranks)]


def trained_rows(step: list[dict]) -> list[int]:
    """The rows a step trains (their first token less one), padding left out."""
    return [int(ids[0]) - 1 for mb in step for ids, labels in zip(mb["input_ids"], mb["labels"], strict=True)
            if (labels != IGNORE_INDEX).any()]


@pytest.mark.parametrize("n_rows,ranks", [(10, 2), (11, 2), (13, 4), (3, 4), (8, 1)])
def test_shards_are_disjoint_cover_the_epoch_and_have_equal_length(n_rows, ranks):
    order = list(range(100, 100 + n_rows))
    shards = [shard_indices(order, ranks, r) for r in range(ranks)]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    real = [i for s in shards for i in s if i is not None]
    assert sorted(real) == order  # together: every row once, none twice
    assert sum(i is None for s in shards for i in s) == len(shards[0]) * ranks - n_rows  # padding only to even up


def test_every_rank_trains_its_own_rows_and_the_epoch_once():
    per_rank = [[trained_rows(step) for step in loader] for loader in loaders(11, ranks=2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 2  # 6 rows per rank (one of them padding), 2 x 2 per step
    seen = [sum(steps, []) for steps in per_rank]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(11))
    # what each loader says it served is what it yielded
    served_loaders = loaders(11, ranks=2)
    for loader, expected in zip(served_loaders, seen, strict=True):
        list(loader)
        assert list(loader.served) == [0] and list(loader.served[0]) == expected


def served_after_one_epoch(group: list[ResumableLoader]) -> list[dict]:
    for loader in group:
        list(loader)
    return [loader.served for loader in group]


def test_the_run_counts_rows_that_two_ranks_trained_in_the_same_epoch():
    from thinker.backends.local.backend import rows_in_several_shards

    sharded = served_after_one_epoch(loaders(11, ranks=2))
    assert rows_in_several_shards(sharded) == 0 and sum(len(s[0]) for s in sharded) == 11
    # what the count exists to catch: every rank serving the whole epoch (no sampler, the bug)
    assert rows_in_several_shards(served_after_one_epoch([loaders(11, ranks=1)[0] for _ in range(2)])) == 11
    # the same row in two different epochs is no overlap
    assert rows_in_several_shards([{0: [1, 2]}, {1: [1, 2]}]) == 0


def test_a_global_step_trains_the_rows_of_one_process_with_ranks_times_the_batch():
    """Rank r's step s, over all r, is a single process's step s at batch_size x ranks: with the loss normalised
    over the global step (thinker.backends.local.module), the gradients are the same."""
    ranks, batch_size, grad_accum = 3, 2, 2
    sharded = [list(loader) for loader in loaders(29, ranks, batch_size, grad_accum)]
    single = list(loaders(29, 1, batch_size * ranks, grad_accum)[0])
    assert len(single) == len(sharded[0]) == 3
    for s, step in enumerate(single):
        assert sorted(sum((trained_rows(rank_steps[s]) for rank_steps in sharded), [])) == sorted(trained_rows(step))


def test_padding_rows_carry_no_loss():
    (loader,) = loaders(3, ranks=4, batch_size=1, grad_accum=1)[3:]  # rank 3 of 4 has only padding
    (step,) = list(loader)
    assert (step[0]["labels"] == IGNORE_INDEX).all() and float(step[0]["weights"].sum()) == 0.0
    assert loader.served == {}


def test_the_shards_are_the_same_for_the_same_seed_and_epoch_and_change_with_either():
    def shard(seed, epoch):
        return loaders(20, ranks=2, seed=seed)[1].shard(epoch)

    assert shard(3, 0) == shard(3, 0)
    assert shard(3, 1) != shard(3, 0) and sorted(shard(3, 1)) != sorted(shard(3, 0))  # other rows, not a reorder
    assert shard(4, 0) != shard(3, 0)
    # every epoch still splits the rows between the ranks
    for epoch in range(3):
        halves = [set(loader.shard(epoch)) for loader in loaders(20, ranks=2)]
        assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 20


def test_a_resumed_rank_skips_exactly_the_steps_it_trained():
    epoch = {"now": 1}
    make = [ResumableLoader(rows(14), 2, 0, packed=True, seed=5, shuffle=True, current_epoch=lambda: epoch["now"],
                            micro_batches_per_step=1, num_replicas=2, rank=r) for r in range(2)]
    straight = [[trained_rows(step) for step in loader] for loader in make]
    for rank, loader in enumerate(make):
        state = {**loader.state_dict(), "epoch": 1, "processed": 2}  # what a checkpoint after step 2 holds
        assert state["num_replicas"] == 2
        resumed = ResumableLoader(rows(14), 2, 0, packed=True, seed=5, shuffle=True,
                                  current_epoch=lambda: epoch["now"], micro_batches_per_step=1, num_replicas=2,
                                  rank=rank)
        resumed.load_state_dict(state)
        assert [trained_rows(step) for step in resumed] == straight[rank][2:]


def test_resuming_on_another_number_of_ranks_is_refused():
    (loader,) = loaders(10, ranks=1)
    with pytest.raises(ThinkerError) as info:
        loader.load_state_dict({"epoch": 0, "processed": 1, "num_replicas": 2})
    assert "2 process(es)" in info.value.line() and info.value.exit_code == ExitCode.TRAIN
    loader.load_state_dict({"epoch": 0, "processed": 1})  # a checkpoint from before data parallelism: one process


def test_the_rank_comes_from_whichever_launcher_started_the_process():
    assert is_rank_zero({}) and rank_name({}) is None
    assert rank_name({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "16"}) is None  # torchrun's rank 0
    assert rank_name({"RANK": "9", "LOCAL_RANK": "1", "WORLD_SIZE": "16"}) == "rank 9"
    assert rank_name({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}) == "rank 1"  # Lightning's child
    assert rank_name({"NODE_RANK": "1"}) == "node 1 rank 0"  # a second node started by hand
    assert rank_name({"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "8"}) == "rank 3"
    # Lightning's children inside a SLURM job inherit SLURM_PROCID=0: LOCAL_RANK still tells them apart
    assert rank_name({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}) == "rank 1"

    assert external_launcher({"RANK": "0", "WORLD_SIZE": "2"}) == "torchrun"
    assert external_launcher({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "4"}) == "srun"
    assert external_launcher({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}) is None  # Lightning starts its own ranks
    assert external_launcher({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # one sbatch task


def test_a_rank_started_by_torchrun_keeps_out_of_rank_0s_files():
    env = {"RANK": "1", "WORLD_SIZE": "2"}
    assert worker_overrides(["trainer=ddp"], env) == ["hydra.output_subdir=null", "hydra.job.name=rank_1"]
    # Lightning adds both itself to the ranks it starts
    lightning = ["hydra.run.dir=x", "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]
    assert worker_overrides(lightning, {"LOCAL_RANK": "1"}) == []
    assert worker_overrides(["trainer=ddp"], {"RANK": "0", "WORLD_SIZE": "2"}) == []


def test_processes_are_counted_before_torch_is_imported():
    from thinker.backends.local.backend import processes_per_run

    assert processes_per_run(compose(["trainer=ddp_cpu"])) == 2
    assert processes_per_run(compose(["trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"])) == 16
    assert processes_per_run(compose(["trainer=ddp"])) is None  # devices=auto on GPUs: the machine decides
    assert processes_per_run(compose(["trainer=ddp", "trainer.devices='0,1,2'"])) == 3
    assert processes_per_run(compose(["trainer=cpu"])) == 1


def test_ddp_cpu_trains_the_global_batch_of_trainer_cpu():
    ddp, cpu = compose(["trainer=ddp_cpu"]).trainer, compose(["trainer=cpu"]).trainer
    assert ddp.devices * ddp.batch_size * ddp.grad_accum == cpu.batch_size * cpu.grad_accum


def test_num_nodes_goes_into_the_fingerprint_only_when_there_are_several():
    from thinker.tracking.fingerprint import config_fingerprint, fingerprint_inputs

    assert "num_nodes" not in fingerprint_inputs(compose())["trainer"]  # single-machine fingerprints unchanged
    assert config_fingerprint(compose(["trainer=ddp", "trainer.num_nodes=2"])) != config_fingerprint(
        compose(["trainer=ddp"]))


def test_fsdp_on_the_cpu_is_refused_at_config_check():
    from thinker.config.check import check_config

    with pytest.raises(ThinkerError) as info:
        check_config(compose(["trainer=ddp_cpu", "trainer.strategy=fsdp"]), env={})
    assert info.value.where == "trainer.strategy, trainer.accelerator" and "trainer=ddp_cpu" in info.value.fix


@pytest.fixture
def quick(tmp_path):
    def run(args, **env):
        return launch([*args, "logger=none", "validation.enabled=false"], cwd=tmp_path,
                      env=clean_env(**env), timeout=120)
    return run


def test_a_sweep_of_multi_process_trainings_is_refused_at_config_check(quick):
    out = quick(["-m", "trainer=ddp_cpu", "seed=1,2"])
    assert out.returncode == ExitCode.CONFIG, out.stderr[-2000:]
    refusals = [line for line in out.stderr.splitlines() if line.startswith("[thinker] error: trainer.devices=2")]
    assert len(refusals) == 2 and "which a sweep (-m) cannot do" in refusals[0]  # each job, before training
    assert "Initializing distributed" not in out.stdout + out.stderr


def test_ranks_started_by_torchrun_need_one_run_folder(quick):
    # rank 0 of two that torchrun would start: refused before it waits for the other rank
    out = quick(["trainer=ddp_cpu"], RANK="0", LOCAL_RANK="0", WORLD_SIZE="2")
    assert out.returncode == ExitCode.CONFIG, out.stderr[-2000:]
    assert "[thinker] error: torchrun started every rank" in out.stderr and ", hydra.run.dir, " in out.stderr
