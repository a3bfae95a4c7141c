"""The Ray engine's timings (where a stage's wall time went), from the slices' own clocks."""

from refinery.engine.ray_engine import slice_timings
from refinery.engine.tasks import step_timings


def test_slice_timings_split_start_up_work_and_drain_and_show_each_workers_share():
    slices = [
        {"start": 102.0, "end": 104.0, "cpu": 1.5, "worker": "a", "init_s": 0.5, "ready": 101.5},
        {"start": 104.0, "end": 107.0, "cpu": 2.5, "worker": "a", "init_s": 0.5, "ready": 101.5},
        {"start": 103.0, "end": 106.0, "cpu": 3.0, "worker": "b", "init_s": 1.0, "ready": 102.5},
    ]
    t = slice_timings(slices, map_started=100.0, plan_s=0.1, map_s=7.5, finish_s=0.2)
    assert t["startup_s"] == 2.0  # the first slice began 2 s after the pool was asked for
    assert t["work_s"] == 5.0  # 102 → 107
    assert t["drain_s"] == 0.5  # the pool's results in hand at 107.5
    assert t["slice_s"] == 8.0 and t["slice_cpu_s"] == 7.0
    assert t["busy_s"] == [3.0, 5.0] and t["init_s"] == [0.5, 1.0]
    assert (t["plan_s"], t["map_s"], t["finish_s"]) == (0.1, 7.5, 0.2)


def test_slice_timings_of_a_run_that_reused_every_slice_keep_the_drivers_figures():
    assert slice_timings([], 0.0, plan_s=0.1, map_s=0.0, finish_s=0.3) == {
        "plan_s": 0.1,
        "map_s": 0.0,
        "finish_s": 0.3,
    }


def test_step_timings_count_tasks_processes_and_cpu():
    tasks = [
        {"start": 11.0, "end": 12.0, "cpu": 0.9, "pid": 7},
        {"start": 11.5, "end": 13.0, "cpu": 1.4, "pid": 8},
        {"start": 12.0, "end": 14.0, "cpu": 1.8, "pid": 7},
    ]
    t = step_timings("read_piece", tasks, submitted=10.0)
    assert (t["step"], t["tasks"], t["processes"]) == ("read_piece", 3, 2)
    assert (t["startup_s"], t["work_s"], t["task_s"], t["task_cpu_s"]) == (1.0, 3.0, 4.5, 4.1)
    assert step_timings("none", [], 0.0) == {"step": "none", "tasks": 0}
