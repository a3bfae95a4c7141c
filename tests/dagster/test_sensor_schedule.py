"""The inbox sensor and the corpus report's automation condition, evaluated against a temporary instance."""

import datetime
import hashlib
import json
import os
import random
import time

import dagster as dg

from assets import TEXT_QUALITY
from definitions import defs
from refinery import names
from refinery.sample import prose
from resources import RefineryHome
from sensors.inbox import text_inbox_sensor
from tests.conftest import write_source
from tests.dagster.conftest import (
    build_inbox,
    jsonl,
    materialize_report,
    materialize_source,
    materialize_text_chain,
    resources_for,
)


def settle(folder, age: float = 60) -> None:
    """Backdate every file so the sensor's quiet period has passed."""
    past = time.time() - age
    for path in folder.rglob("*"):
        os.utime(path, (past, past))


def tick(instance, home, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"refinery": RefineryHome(home=str(home.home))}
    )
    return text_inbox_sensor(context)


def apply_partitions(instance, result) -> None:
    """What the daemon does with the sensor's dynamic partition requests."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_new_sources_become_partitions_with_runs(home, instance):
    for name in ("news", "forum"):
        settle(write_source(home, name, {"a.jsonl": '{"text": "hello"}\n'}))
    first = tick(instance, home)
    assert [(r.partitions_def_name, sorted(r.partition_keys)) for r in first.dynamic_partitions_requests] == [
        ("text_source", ["forum", "news"])
    ]
    assert sorted(r.partition_key for r in first.run_requests) == ["forum", "news"]
    # Only the raw asset: the later stages follow by their automation conditions.
    assert {tuple(k.to_user_string() for k in r.asset_selection) for r in first.run_requests} == {
        ("raw_documents",)
    }
    assert len({r.run_key for r in first.run_requests}) == 2
    apply_partitions(instance, first)

    second = tick(instance, home, first.cursor)
    assert isinstance(second, dg.SkipReason) and "no new or changed" in second.skip_message


def test_changed_and_added_files_request_a_run_for_that_source_only(home, instance):
    news = write_source(home, "news", {"a.jsonl": '{"text": "hello"}\n'})
    settle(news)
    settle(write_source(home, "forum", {"a.jsonl": '{"text": "hi"}\n'}))
    first = tick(instance, home)
    apply_partitions(instance, first)

    (news / "b.jsonl").write_text('{"text": "another"}\n')
    settle(news)
    changed = tick(instance, home, first.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["news"]
    assert changed.dynamic_partitions_requests == []
    assert changed.run_requests[0].run_key != first.run_requests[1].run_key

    (news / "a.jsonl").write_text('{"text": "hello, edited"}\n')
    settle(news, age=30)
    edited = tick(instance, home, changed.cursor)
    assert [r.partition_key for r in edited.run_requests] == ["news"]


def test_files_still_being_written_wait_for_a_later_tick(home, instance):
    write_source(home, "fresh", {"a.jsonl": '{"text": "just copied"}\n'})  # mtime: now
    result = tick(instance, home)
    assert isinstance(result, dg.SkipReason) and "still being written" in result.skip_message


def test_invalid_source_names_are_ignored(home, instance):
    settle(write_source(home, "good", {"a.jsonl": '{"text": "x"}\n'}))
    bad = home.inbox_kind("text") / "has space"
    bad.mkdir()
    (bad / "a.jsonl").write_text('{"text": "x"}\n')
    settle(bad)
    result = tick(instance, home)
    assert [r.partition_key for r in result.run_requests] == ["good"]
    # The cursor holds one fingerprint per valid source: sha1 over (relative path, size, mtime in ns)
    # of each file, first 16 hex digits; the invalid folder is not in it.
    stat = (home.inbox_source("text", "good") / "a.jsonl").stat()
    expected = hashlib.sha1(f"a.jsonl\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()).hexdigest()[:16]
    assert json.loads(result.cursor) == {"good": expected}
    assert result.run_requests[0].run_key == f"text:good:{expected}"


def test_sensor_run_request_materializes_the_raw_asset(home, instance):
    settle(
        write_source(home, "news", {"a.jsonl": '{"text": "' + "A plain sentence with words. " * 30 + '"}\n'})
    )
    result = tick(instance, home)
    apply_partitions(instance, result)
    request = result.run_requests[0]
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(request.asset_selection)
    )
    run = job.execute_in_process(
        partition_key=request.partition_key, instance=instance, resources=resources_for(home)
    )
    assert run.success
    assert [e.asset_key.to_user_string() for e in run.get_asset_materialization_events()] == ["raw_documents"]


def test_sensor_requests_the_same_raw_asset_whether_or_not_models_exist(home, instance):
    from refinery.quality.artifacts import TEXT_MODEL_ASSETS, models_dir, publish

    settle(write_source(home, "news", {"a.jsonl": '{"text": "hello"}\n'}))
    for asset in TEXT_MODEL_ASSETS:  # what materializing reference_lm / quality_classifier leaves behind
        produced = home.home / f"{asset}.bin"
        produced.write_bytes(asset.encode())
        publish(models_dir(home.home, asset), asset, produced, ".bin", {"kind": asset})
    result = tick(instance, home)
    assert [(r.partition_key, [k.path[-1] for k in r.asset_selection]) for r in result.run_requests] == [
        ("news", ["raw_documents"])
    ]


def test_the_report_refreshes_when_a_new_source_gets_its_corpus(home, instance):
    """corpus_report's one refresh path, its automation condition, evaluated as the automation
    sensor does: a new source's partition makes the report wait until that source's corpus is built,
    then refresh (a refresh tick has passed), and the run it requests covers the new source."""
    build_inbox(home)
    materialize_text_chain(instance, home, ["alpha", "beta"])
    assert materialize_report(instance, home).success
    report = dg.AssetSelection.assets(names.CORPUS_REPORT)
    start = datetime.datetime.now(datetime.UTC)

    def evaluate(cursor, hours: float):
        return dg.evaluate_automation_conditions(
            defs=defs,
            instance=instance,
            asset_selection=report,
            cursor=cursor,
            evaluation_time=start + datetime.timedelta(hours=hours),
        )

    first = evaluate(None, 0)
    assert first.total_requested == 0  # the report is up to date
    rng = random.Random(17)
    texts = [prose.article(rng, "travel", paragraphs=4) for _ in range(3)]
    write_source(home, "gamma", {"docs.jsonl": jsonl([{"text": t} for t in texts])})
    assert "gamma" not in (home.reports / "corpus_report.md").read_text()
    assert materialize_source(instance, home, "gamma").success  # the new source; no corpus yet
    waiting = evaluate(first.cursor, 2)
    assert waiting.total_requested == 0
    assert dg.materialize(
        TEXT_QUALITY, partition_key="gamma", instance=instance, resources=resources_for(home)
    ).success
    refreshed = evaluate(waiting.cursor, 2.01)
    assert refreshed.get_num_requested(dg.AssetKey(names.CORPUS_REPORT)) == 1
    assert materialize_report(instance, home).success  # the run the sensor would launch
    assert "gamma" in (home.reports / "corpus_report.md").read_text()
    assert evaluate(refreshed.cursor, 2.02).total_requested == 0  # requested once, then handled
