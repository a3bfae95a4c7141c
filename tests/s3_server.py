"""A real S3 API for tests: moto's standalone server on a free loopback port, reached through
pyarrow.fs with a storage root URI. Import the fixtures (``s3_root``, ``s3_credentials``) into a test
module to use them."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BUCKET = "refinery-test"


@contextlib.contextmanager
def moto_root_uri(timeout: float = 30) -> Iterator[str]:
    """moto's S3 server on a free loopback port, stopped on exit; the storage root URI of
    :data:`BUCKET` on it (the bucket is not made here: that needs the credentials). The benchmarks
    over an S3 root start the same server (benchmarks/s3_loopback.py)."""
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
        yield f"s3://{BUCKET}/refinery?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def s3_root():
    """A moto S3 server on a free loopback port; the storage root URI of a bucket on it."""
    from refinery.object_storage import ObjectStorage

    with moto_root_uri() as root:
        with pytest.MonkeyPatch.context() as patch:  # the bucket is made with the test credentials
            for name, value in CREDENTIALS.items():
                patch.setenv(name, value)
            store = ObjectStorage(root + "&allow_bucket_creation=true")
            store.fs.create_dir(BUCKET)
        yield root


CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


SCRATCH_TOPS = ("_work", "_staging", ".model_pool", "_shuffle")


def scratch_leftovers(store, tops: tuple[str, ...] = SCRATCH_TOPS) -> list[str]:
    """The files left under an object-store root's scratch folders (a committed run leaves none)."""
    import pyarrow.fs as pafs

    return [
        i.path
        for top in tops
        for i in store.fs.get_file_info(
            pafs.FileSelector(f"{store.base}/{top}", allow_not_found=True, recursive=True)
        )
        if i.type == pafs.FileType.File
    ]
