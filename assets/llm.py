"""The LLM stages (refinery/llm): judge, rewrite and synthesize over pretrain_corpus, judge over
sft_selected. They follow their upstream automatically only when $REFINERY_LLM_BASE_URL is set;
otherwise they run only when asked (jobs llm_text and llm_sft), so the demo never needs an endpoint."""

from collections.abc import Iterator
from contextlib import contextmanager

from assets.factory import stage_asset
from refinery.batch import BatchProcessor
from refinery.kernel.spec import StageContext
from refinery.llm import stages
from refinery.llm.operators import Judge, LlmProcessor, Rewriter, Synthesizer, sft_judge_values
from refinery.llm.prompts import JUDGE_SFT
from refinery.llm.synthesis_inbox import publish_synthesized, sft_source_for
from resources.llm import llm_configured


def _stamped(run: StageContext, processor: LlmProcessor) -> LlmProcessor:
    """The output files' provenance names the endpoint, model and template too."""
    run.provenance.update({**processor.endpoint.describe(), **processor.template.describe()})
    return processor


def _judge(run: StageContext) -> BatchProcessor:
    return _stamped(run, Judge(run.resources.llm.under(run.layout.home), run.params))


def _sft_judge(run: StageContext) -> BatchProcessor:
    endpoint = run.resources.llm.under(run.layout.home)
    return _stamped(run, Judge(endpoint, run.params, JUDGE_SFT, sft_judge_values))


def _rewrite(run: StageContext) -> BatchProcessor:
    return _stamped(run, Rewriter(run.resources.llm.under(run.layout.home), run.params))


@contextmanager
def _synthesize(run: StageContext) -> Iterator[BatchProcessor]:
    sft_source = sft_source_for(run.source, run.params.sft_source)
    yield _stamped(run, Synthesizer(run.resources.llm.under(run.layout.home), run.params, run.source))
    written = publish_synthesized(run.storage, run.layout, run.spec.name, run.source, sft_source)
    run.metadata.update(written)
    run.summary.update(written)
    run.log.info(f"{written['sft_records_written']} synthesized SFT records in inbox/sft/{sft_source}/")


_AUTO = llm_configured()
llm_judged = stage_asset(stages.LLM_JUDGED, _judge, resources=["llm"], automatic=_AUTO)
llm_rewritten = stage_asset(stages.LLM_REWRITTEN, _rewrite, resources=["llm"], automatic=_AUTO)
llm_sft_synthesized = stage_asset(stages.LLM_SFT_SYNTHESIZED, _synthesize, resources=["llm"], automatic=_AUTO)
sft_judged = stage_asset(stages.SFT_JUDGED, _sft_judge, resources=["llm"], automatic=_AUTO)
