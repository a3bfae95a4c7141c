"""Mixing pretraining data from several domains: how much of each, and which documents.

``domain_weights`` estimates weights two ways (DSIR-style importance against a target set, and a
DoReMi-style proxy model); ``pretrain_mixture`` draws a token-budgeted sample that follows them.
A domain is a text source (a partition of ``pretrain_corpus``) or the value of a ``domain``
column when the corpus carries one.
"""
