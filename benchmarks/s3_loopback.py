"""moto's S3 server on a free loopback port, for benchmarks over an ``s3://`` storage root.

The same server the tests use (tests/s3_server.py), as a context manager: it yields the root URI of
a bucket on it, with the test credentials set in this process's environment (Ray nodes started
afterwards inherit them). moto is one Python process: on a small machine it shares the cores with
the workers it serves, so figures over it are a lower bound for a real object store.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BUCKET = "refinery-bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def moto_root(timeout: float = 30) -> Iterator[str]:
    """The storage root URI of a fresh bucket on a moto server started here, stopped on exit."""
    from refinery.object_storage import ObjectStorage

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        os.environ.update(CREDENTIALS)
        root = f"s3://{BUCKET}/refinery?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        ObjectStorage(root + "&allow_bucket_creation=true").fs.create_dir(BUCKET)
        yield root
    finally:
        server.terminate()
        server.wait(timeout=30)
