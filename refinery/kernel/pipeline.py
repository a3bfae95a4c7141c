"""A pipeline's stages in order, stated once: each stage's upstream follows from its place.

``chain(a, b, c)`` is the order of one inbox kind's stages, the ingest stage first. A spec that
names no upstream reads the stage before it in the list (skipping side tables, which are written
beside the documents and read by name, like the embeddings); a spec that names one keeps it (a
stage beside the chain, such as the other-languages filter or the uniform-keyframes baseline).
Everything else that depends on the order — the name tuples, the asset lists and jobs, the
corpus report's columns, the chain test — is derived from the list.
"""

from __future__ import annotations

from refinery.kernel.spec import StageSpec


def chain(*specs: StageSpec) -> tuple[StageSpec, ...]:
    """The specs in order, each without an upstream given the previous stage that writes documents.

    The specs are completed in place (a spec belongs to one pipeline: its module states the order
    right below the specs), so the module's names for them stay the ones in the list."""
    if not specs or specs[0].upstream is not None:
        raise ValueError("a pipeline starts with its ingest stage (a spec without upstream)")
    kinds = {s.kind for s in specs}
    if len(kinds) != 1:
        raise ValueError(f"one pipeline holds one inbox kind's stages, not {sorted(kinds)}")
    previous = specs[0]
    for spec in specs[1:]:
        if spec.upstream is None:
            object.__setattr__(spec, "upstream", previous.name)  # frozen: completed once, here
        if not spec.side_table:
            previous = spec
    return tuple(specs)


def names_of(specs: tuple[StageSpec, ...]) -> tuple[str, ...]:
    return tuple(s.name for s in specs)
