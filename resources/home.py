"""The home folder as a resource, so a test or a deployment points every asset elsewhere."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from refinery.object_storage import ObjectStorage, open_storage
from refinery.paths import Layout
from refinery.storage import Storage


class RefineryHome(dg.ConfigurableResource):
    """Root of inbox, storage and indexes. Empty means ``$REFINERY_HOME``, else ``./.refinery``.

    ``storage_root`` moves the assets' data elsewhere: a local folder or ``file:///…`` URI, or an
    object store through ``pyarrow.fs`` (``s3://bucket/prefix?endpoint_override=…``, ``gs://…``);
    empty means ``<home>/storage``. The inbox, the dedup indexes, the models and Dagster's own
    instance stay under the home (docs/running.md says why)."""

    home: str = Field("", description="The Refinery home folder ('': $REFINERY_HOME, else ./.refinery).")
    storage_root: str = Field(
        "",
        description="Where the assets' data lives: a local folder, a file:/// URI or an object store through "
        "pyarrow.fs (s3://bucket/prefix?endpoint_override=…); '' is <home>/storage. The inbox, dedup "
        "indexes, models and Dagster's instance stay under the home.",
    )

    def layout(self) -> Layout:
        return Layout.at(self.home or None)

    def storage(self) -> Storage | ObjectStorage:
        return open_storage(self.storage_root or str(self.layout().storage))
