"""Model loading shared by stages: compute device selection and local sentence embedders.

Nothing here downloads: models load from local paths only, and a missing file is an error that
names the path and how to provide it.
"""
