"""Each inbox kind's stages: one module per kind (``text``, ``sft``, ``image_text``, ``video``) with
its specs and their order, ``STAGES = chain(...)``. The machinery that runs them is refinery.kernel."""
