"""The heuristic rules of ``heuristic_filtered``, one module each.

A module here holds one :class:`refinery.filters.rule.Rule` subclass: its parameters, score
columns, reason codes and check. :func:`refinery.filters.chain.registered_rules` imports every
module of this package, so adding a rule is adding a file (and its test); its parameters join
``HeuristicParams`` (the stage's config), its scores the output columns, its reason codes
``disabled_rules``. Run order is each rule's ``position``: today Gopher quality (100), Gopher
repetition (200), the language gate (300), Gopher stop words (400), C4 (500).
"""
