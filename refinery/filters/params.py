"""Every threshold of the heuristic rule set, with the published values as defaults.

Gopher: Rae et al. 2021, "Scaling Language Models", appendix A (quality filter and table A1).
C4: Raffel et al. 2020, section 2.2, as implemented in TensorFlow Datasets' ``c4_utils``.
Any threshold set to ``None`` switches its rule off; ``disabled_rules`` switches rules off by
their reason code; each family has a master switch.

The rule set assumes English (``language='en'``): Gopher's stop words and C4's sentence and
policy rules are English. Non-English documents are not failed silently by those rules: the
chain runs the language-agnostic rules first, then a language gate that rejects other
languages with reason ``language.not_english`` and the measured share of English function
words, then the English rules. A user sees why, and can turn the gate off.

Each rule declares its own thresholds (``refinery/filters/rules/``); ``HeuristicParams`` is all of
them in one model, built by the chain: ``language`` and ``disabled_rules``, then the language gate,
Gopher quality, Gopher stop words, Gopher repetition and C4.
"""

from __future__ import annotations

from refinery.filters.chain import CHAIN

HeuristicParams = CHAIN.params

# Reason code -> (parameter, value that switches the rule off), every rule's codes.
RULE_SWITCHES: dict[str, tuple[str, object]] = CHAIN.switches
