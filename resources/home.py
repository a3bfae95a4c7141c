"""The home folder as a resource, so a test or a deployment points every asset elsewhere."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from refinery.paths import Layout
from refinery.storage import Storage


class RefineryHome(dg.ConfigurableResource):
    """Root of inbox, storage and indexes. Empty means ``$REFINERY_HOME``, else ``./.refinery``."""

    home: str = Field("", description="The Refinery home folder ('': $REFINERY_HOME, else ./.refinery).")

    def layout(self) -> Layout:
        return Layout.at(self.home or None)

    def storage(self) -> Storage:
        return Storage(self.layout().storage)
