"""Compiled per-character passes over a batch's UTF-8 text (numba, ``cache=True``).

The rule-based chain's remaining cost after the numpy and RE2 rewrites was per-character and
per-line work: several array passes per batch, each paying fresh memory, or a Python call per line.
Here each job is one compiled loop over the Arrow buffer of a batch's texts (offsets + UTF-8 bytes,
read in place), decoding code points as it goes. The character classes are not written by hand:
:mod:`refinery.text.kernels.tables` builds them from Python's own ``re`` and ``str`` over every code
point, so the kernels agree with the Python paths they replace by construction, and the unit tests
hold them equal on real and crafted text.

numba compiles a kernel on its first call in a process (seconds) and, with ``cache=True``, writes
the machine code beside the module (``__pycache__/``, or ``$NUMBA_CACHE_DIR``, or ``~/.cache/numba``
when the package folder is read-only); later processes load it in milliseconds. numba itself is
imported only when a kernel is first used, not by ``import definitions``.
"""
