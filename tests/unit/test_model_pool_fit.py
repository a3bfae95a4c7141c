"""A model pool asks Ray for no more CPUs than the cluster has: actors hold theirs for the whole
stage while the decode tasks stream beside them, so an oversized request would wait forever."""

import pytest

from refinery.models.pool import ModelPool


def test_a_pool_that_fits_is_left_as_it_is():
    pool = ModelPool(actors=2, cpus_per_actor=1.0, decode_cpus=1.0)
    assert pool.fitted(4) is pool and pool.fitted(3) is pool


def test_the_defaults_on_a_one_cpu_cluster_share_its_cpu():
    fitted = ModelPool().fitted(1)  # one actor and one decode CPU: 2 asked of 1
    assert fitted.actors * fitted.cpus_per_actor + fitted.decode_cpus == pytest.approx(1.0)
    assert fitted.cpus_per_actor == pytest.approx(0.5) and fitted.decode_cpus == pytest.approx(0.5)


def test_gpus_and_the_pool_size_are_kept():
    fitted = ModelPool(actors=4, num_gpus=0.25, cpus_per_actor=2.0, decode_cpus=2.0, batch_size=8).fitted(5)
    assert (fitted.actors, fitted.num_gpus, fitted.batch_size) == (4, 0.25, 8)
    assert 4 * fitted.cpus_per_actor + fitted.decode_cpus == pytest.approx(5.0)
