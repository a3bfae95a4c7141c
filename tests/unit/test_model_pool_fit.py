"""A model pool's requests fitted to the cluster's nodes, not its total: an actor's GPUs and CPUs
must be on one node, and the decode tasks get what the actors leave on a node. Sized against the
total, two actors of 2/3 CPU on two one-CPU nodes left 1/3 CPU per node to a decode task of 2/3:
the Ray Data pipeline waited forever (refinery/engine/model_actors.py)."""

import pytest

from refinery.engine.model_actors import PoolDoesNotFit, ahead, decode_share, expected_nodes, fit_actor
from refinery.models.pool import ModelPool

TWO_ONE_CPU = [{"id": "a", "CPU": 1.0, "GPU": 0.0}, {"id": "b", "CPU": 1.0, "GPU": 0.0}]


def test_the_decode_tasks_get_what_the_actors_leave_on_a_node():
    pool = fit_actor(ModelPool(actors=2), TWO_ONE_CPU)  # the defaults: 1 CPU per actor and decode task
    where = expected_nodes(pool, TWO_ONE_CPU, 2)
    assert where == ["a", "b"]  # one actor per node
    assert decode_share(pool, TWO_ONE_CPU, where) == 0.0  # no decode task: the actors decode
    assert ahead(2, 0.0, TWO_ONE_CPU, where, 1.0) == 0
    half = ModelPool(actors=2, cpus_per_actor=2 / 3)  # what the old cluster-wide fit gave
    assert decode_share(half, TWO_ONE_CPU, ["a", "b"]) == pytest.approx(1 / 3)  # cut to fit a node
    one = ModelPool(actors=1)
    assert decode_share(one, TWO_ONE_CPU, expected_nodes(one, TWO_ONE_CPU, 1)) == 1.0  # the free node


def test_a_gpu_node_runs_fractional_actors_and_decoding_beside_them():
    nodes = [{"id": "cpu", "CPU": 4.0, "GPU": 0.0}, {"id": "gpu", "CPU": 8.0, "GPU": 1.0}]
    pool = fit_actor(ModelPool(actors=4, num_gpus=0.25, cpus_per_actor=1.0, decode_cpus=1.0), nodes)
    where = expected_nodes(pool, nodes, 4)
    assert where == ["gpu"] * 4
    assert decode_share(pool, nodes, where) == 1.0
    assert ahead(4, 1.0, nodes, where, 1.0) == 8  # 8 free CPUs: two per actor already covers them
    assert ahead(1, 0.25, nodes, ["gpu"], 1.0) == 4  # 44 slots, at most four per actor


def test_an_actor_that_no_node_holds_is_refused_or_cut():
    with pytest.raises(PoolDoesNotFit, match=r"0\.5 GPU.*1 CPU / 0 GPU"):
        fit_actor(ModelPool(num_gpus=0.5), TWO_ONE_CPU)
    assert fit_actor(ModelPool(cpus_per_actor=3.0), TWO_ONE_CPU).cpus_per_actor == 1.0
    head_without_cpus = [{"id": "h", "CPU": 0.0, "GPU": 0.0}, *TWO_ONE_CPU]
    pool = ModelPool(actors=3, cpus_per_actor=1.0)
    assert expected_nodes(pool, head_without_cpus, 3) == ["a", "b"]  # the third waits, holding nothing
