"""Adaptive selection: the online DoReMi rule, the slot allocation, and the delivery guarantee of
the re-weighted stream (within each domain: schedule order, no repeats until the domain is
exhausted; every slot once across ranks and workers; resume reproduces the stream) with a real
torch DataLoader and live feedback, and under torch.distributed (gloo, two processes)."""

import json
import shutil
from collections import defaultdict

import numpy as np
import pytest

from refinery.schedule.adaptive import (
    AdaptiveParams,
    AdaptiveReader,
    OnlineDoremi,
    allocate_counts,
    interleave,
    log_path,
    schedule_domains,
)
from refinery.schedule.loader import ScheduleError
from tests.unit.schedule_helpers import mixed_domains, write_schedule

G, N, B = 16, 600, 4  # docs per step, documents, batch: 2 ranks → m = 8, two batches per step
LOSS = {"a": 1.0, "b": 3.0, "c": 2.0}  # b is the hardest: with reference 0 its excess is highest
PARAMS = AdaptiveParams(lag=2, eta=0.3, smoothing=0.1)


@pytest.fixture(scope="module")
def schedule(tmp_path_factory):
    return write_schedule(
        tmp_path_factory.mktemp("adaptive"), mixed_domains(N, {"a": 0.5, "b": 0.3, "c": 0.2}), G, 250, 40
    )


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# -- the rule ---------------------------------------------------------------------------------------


def test_update_moves_weight_to_the_highest_excess_loss_within_the_smoothing_bounds(tmp_path):
    c, k = 0.1, 3
    params = AdaptiveParams(eta=0.5, smoothing=c, lag=0)
    mixer = OnlineDoremi(tmp_path / "one", ["a", "b", "c"], np.array([0.5, 0.3, 0.2]), params)
    history = [mixer.weights.copy()]
    for step in range(60):
        mixer.update(step, ["a", "b", "c", "b"], [1.0, 3.0, 2.0, 3.2])
        history.append(mixer.weights.copy())
    w = np.array(history)
    assert (np.diff(w[:, 1]) > 0).all() and (np.diff(w[:, 0]) < 0).all()  # b up, a (least excess) down
    assert np.allclose(w.sum(axis=1), 1)
    assert (w[1:] >= c / k - 1e-12).all() and (w[1:] <= 1 - c + c / k + 1e-12).all()
    # a fixed point inside the bounds (smoothing puts c back every update), far towards b
    assert np.allclose(w[-1], w[-2], atol=1e-6) and w[-1, 1] > 0.85 and w[-1, 1] > w[-1, 2] > w[-1, 0]
    assert np.allclose(mixer.mean_weights, w[1:].mean(axis=0))
    # deterministic: the same losses give the same log, byte for byte
    again = OnlineDoremi(tmp_path / "two", ["a", "b", "c"], np.array([0.5, 0.3, 0.2]), params)
    for step in range(60):
        again.update(step, ["a", "b", "c", "b"], [1.0, 3.0, 2.0, 3.2])
    mixer.close(), again.close()
    assert log_path(tmp_path / "one", 0).read_bytes() == log_path(tmp_path / "two", 0).read_bytes()


def test_excess_is_against_the_reference_and_unseen_domains_keep_theirs(tmp_path):
    params = AdaptiveParams(eta=1.0, smoothing=0.0, lag=0, excess_ema=0.0)
    ref = {"a": 0.5, "b": 3.0, "c": 0.5}  # b's loss is all reference: no excess, however high
    mixer = OnlineDoremi(tmp_path, ["a", "b", "c"], np.full(3, 1 / 3), params, reference_loss=ref)
    mixer.update(0, ["a", "b", "c"], [1.0, 2.5, 0.7])  # excess 0.5, 0 (clipped), 0.2
    assert mixer.excess.tolist() == pytest.approx([0.5, 0.0, 0.2])
    assert mixer.weights.argmax() == 0 and mixer.weights.argmin() == 1
    mixer.update(1, ["a"], [0.6], reference=[0.0])  # per-example reference; b and c unseen
    assert mixer.excess.tolist() == pytest.approx([0.6, 0.0, 0.2])
    smoothed = OnlineDoremi(tmp_path / "ema", ["a", "b"], np.full(2, 0.5), AdaptiveParams(excess_ema=0.9))
    smoothed.update(0, ["a", "b"], [1.0, 2.0])  # first observation taken as is
    smoothed.update(1, ["a"], [3.0])  # then 0.9 × old + 0.1 × new; b keeps its own
    assert smoothed.excess.tolist() == pytest.approx([1.2, 2.0])
    with pytest.raises(ScheduleError, match="where step 2 was due"):
        mixer.end_step(5)
    with pytest.raises(ScheduleError, match="unknown domain"):
        mixer.observe(["z"], [1.0])


def test_allocation_follows_the_weights_within_two_documents():
    rng = np.random.default_rng(3)
    for slots in (1, 7, 64):
        k = 5
        credits, delivered, target = np.zeros(k), np.zeros(k), np.zeros(k)
        for _ in range(400):
            w = rng.dirichlet(np.full(k, 0.3))
            counts = allocate_counts(credits, w, slots)
            assert counts.sum() == slots and (counts >= 0).all()
            delivered += counts
            target += slots * w
            assert np.abs(delivered - target).max() < 2
            domain, within = interleave(counts)
            for d in range(k):  # each domain's slots numbered 0…c−1 in order
                assert within[domain == d].tolist() == list(range(counts[d]))


# -- the stream, with a real DataLoader and live feedback -----------------------------------------------


def run_rank(
    root, feedback, rank, world, start=0, workers=2, params=PARAMS, shift=0.0, shared=True, context=None
):
    """A training loop: per-example losses by domain, feedback after every step; returns the rows.

    ``shared``: ranks run one after the other here, without torch.distributed, so each reports the
    step's per-domain losses of all ranks together (what the all-reduce gives under DDP: every rank
    must feed the same numbers); else its own batch's (the DDP test, where the all-reduce runs)."""
    from refinery.schedule.loader import ScheduleDataset

    mixer = OnlineDoremi.for_schedule(root, "train", feedback, params, start_step=start, rank=rank)
    data = ScheduleDataset(
        root,
        "train",
        batch_size=B,
        start_step=start,
        rank=rank,
        world_size=world,
        columns=["position", "domain"],
        feedback=feedback,
    )
    per_step = G // world // B
    rows, batches = [], 0
    for i, batch in enumerate(data.loader(num_workers=workers, multiprocessing_context=context)):
        step = int(batch["step"][0])
        assert (batch["step"] == step).all() and len(batch["domain"]) == B
        domains = list(LOSS) if shared else batch["domain"]
        if not shared or (i + 1) % per_step == 0:
            mixer.observe(domains, [LOSS[d] + shift + 0.01 * (step % 7) for d in domains])
        if (i + 1) % per_step == 0:
            mixer.end_step(step)
        rows += [
            dict(zip(("slot", "position", "domain", "epoch", "step"), r, strict=True))
            for r in zip(
                batch["slot"].tolist(),
                batch["position"].tolist(),
                batch["domain"],
                batch["domain_epoch"].tolist(),
                batch["step"].tolist(),
                strict=True,
            )
        ]
        batches += 1
    mixer.close()
    assert batches == len(data)
    return rows


def check_guarantee(root, rows, steps):
    """Every slot once; within each domain, schedule order, passes in turn, no repeat in a pass."""
    assert sorted(r["slot"] for r in rows) == list(range(steps * G))
    names, sizes, _, _ = schedule_domains(root)
    domains = {p: d for p, d in enumerate(mixed_domains(N, {"a": 0.5, "b": 0.3, "c": 0.2}))}
    by_domain = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["slot"]):
        assert domains[r["position"]] == r["domain"] and r["step"] == r["slot"] // G
        by_domain[r["domain"]].append(r)
    for name, size in zip(names, sizes, strict=True):
        queue = [p for p in range(N) if domains[p] == name]
        got = by_domain[name]
        assert [r["position"] for r in got] == [queue[i % size] for i in range(len(got))]
        assert [r["epoch"] for r in got] == [i // size for i in range(len(got))]
    return by_domain


@pytest.mark.parametrize("lag", [2, 0])  # lag 0: workers wait for every update (no prefetch ahead)
def test_feedback_stream_across_two_ranks_and_two_workers(schedule, tmp_path, lag):
    params = PARAMS.model_copy(update={"lag": lag})
    rows = {r: run_rank(schedule, tmp_path, r, 2, params=params) for r in range(2)}
    steps = -(-N // G)
    assert len(rows[0]) == len(rows[1]) == steps * 8  # the same count on every rank
    for r in range(2):  # the DataLoader's order is the rank's stream, rebuilt from the log without torch
        again = AdaptiveReader(schedule, "train", tmp_path, r, 2, B, columns=["position"])
        assert [x["slot"] for x in again] == [x["slot"] for x in rows[r]]
    logs = [lines(log_path(tmp_path, r)) for r in range(2)]  # same feedback, same weights on both ranks
    assert logs[0] == logs[1]
    by_domain = check_guarantee(schedule, rows[0] + rows[1], steps)
    assert max(r["epoch"] for r in by_domain["b"]) >= 1  # b was exhausted and began a new pass
    initial = logs[0][0]["initial"][1]  # b's share of the schedule, ~0.3
    late = np.mean([r["domain"] == "b" for r in rows[0] + rows[1] if r["step"] >= steps * 3 // 4])
    assert late > initial + 0.3 and late > 0.7  # towards the domain of highest excess loss
    weights = lines(log_path(tmp_path, 0))[-1]["weights"]
    assert np.argmax(weights) == 1


@pytest.mark.parametrize(("world", "start"), [(1, 9), (2, 20)])
def test_resume_from_a_step_with_the_recorded_log_reproduces_the_stream(schedule, tmp_path, world, start):
    full = {r: run_rank(schedule, tmp_path / "full", r, world) for r in range(world)}
    crashed = tmp_path / "crashed"  # the run died after step start + 5: its log has updates beyond start
    shutil.copytree(tmp_path / "full", crashed)
    for r in range(world):
        path = log_path(crashed, r)
        path.write_text("".join(json.dumps(e) + "\n" for e in lines(path) if e.get("step", -1) < start + 5))
    for r in range(world):
        resumed = run_rank(schedule, crashed, r, world, start=start)
        assert resumed == [x for x in full[r] if x["step"] >= start]
        assert lines(log_path(crashed, r)) == lines(log_path(tmp_path / "full", r))
    with pytest.raises(ScheduleError, match="multiple of update_every"):
        OnlineDoremi.for_schedule(
            schedule, "train", crashed, PARAMS.model_copy(update={"update_every": 4}), start_step=start + 2
        )
    with pytest.raises(ScheduleError, match="other parameters"):
        OnlineDoremi.for_schedule(
            schedule, "train", crashed, PARAMS.model_copy(update={"lag": 3}), start_step=start
        )


def test_a_worker_waits_for_feedback_and_says_so_when_none_comes(schedule, tmp_path):
    params = AdaptiveParams(lag=0, wait_timeout_s=0.3)
    mixer = OnlineDoremi.for_schedule(schedule, "train", tmp_path, params)
    reader = AdaptiveReader(schedule, "train", tmp_path, batch_size=G, columns=["position"])
    batches = reader.batches()
    assert len(next(batches)) == G  # step 0: the initial weights
    with pytest.raises(ScheduleError, match="no domain-weight update for step 0"):
        next(batches)  # step 1 needs step 0's update, which the loop never gave
    mixer.close()
    with pytest.raises(ScheduleError, match="must divide"):
        AdaptiveReader(schedule, "train", tmp_path, batch_size=3)
    with pytest.raises(ScheduleError, match="create the OnlineDoremi"):
        AdaptiveReader(schedule, "train", tmp_path / "nothing")


def test_spawned_workers_follow_the_log_too(schedule, tmp_path):
    """The channel is a path: nothing but the dataset is pickled to a spawned worker. (The other
    workers come from the suite's forkserver, see tests/conftest.py: forking the pytest worker
    itself can crash the child.)"""
    spawned = run_rank(schedule, tmp_path / "spawn", 0, 1, workers=1, context="spawn")
    forked = run_rank(schedule, tmp_path / "fork", 0, 1, workers=1, context="forkserver")
    assert spawned == forked and len(spawned) == -(-N // G) * G


# -- under torch.distributed: the per-domain sums are all-reduced, so every rank has the same weights ----


def _ddp_rank(rank, root, feedback, out, init):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    try:
        rows = run_rank(root, feedback, rank, 2, shift=0.5 * rank, shared=False)  # ranks' losses differ
        (out / f"rank{rank}.json").write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def test_ranks_under_torch_distributed_share_weights_through_all_reduce(schedule, tmp_path):
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    # forkserver: spawned ranks would spawn their DataLoader workers too, each importing torch anew;
    # forking the pytest worker can crash the child (see tests/conftest.py)
    mp.start_processes(
        _ddp_rank,
        args=(schedule, tmp_path / "fb", tmp_path, tmp_path / "init"),
        nprocs=2,
        start_method="forkserver",
    )
    logs = [lines(log_path(tmp_path / "fb", r)) for r in range(2)]
    assert logs[0] == logs[1] and len(logs[0]) == 1 + -(-N // G)
    # the all-reduced excess is the mean over both ranks' examples: rank 1's losses are 0.5 higher
    observed = np.array(logs[0][5]["observed"])
    assert observed.sum() == G and torch.distributed.is_available()
    rows = [r for k in range(2) for r in json.loads((tmp_path / f"rank{k}.json").read_text())]
    check_guarantee(schedule, rows, -(-N // G))
