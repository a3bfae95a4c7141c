"""moto's S3 server on a free loopback port, for benchmarks over an ``s3://`` storage root.

The same server the tests use (tests/s3_server.py ``moto_root_uri``), as a context manager: it
yields the root URI of a bucket on it, with the test credentials set in this process's environment
(Ray nodes started afterwards inherit them). moto is one Python process: on a small machine it
shares the cores with the workers it serves, so figures over it are a lower bound for a real object
store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def moto_root(timeout: float = 30) -> Iterator[str]:
    """The storage root URI of a fresh bucket on a moto server started here, stopped on exit."""
    from refinery.object_storage import ObjectStorage
    from tests.s3_server import BUCKET, CREDENTIALS, moto_root_uri

    with moto_root_uri(timeout) as root:
        os.environ.update(CREDENTIALS)
        ObjectStorage(root + "&allow_bucket_creation=true").fs.create_dir(BUCKET)
        yield root
