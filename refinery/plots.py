"""Small PNG plots for Dagster metadata (base64 ``data:`` URIs inside markdown), for every package.

The Dagster UI has no image metadata type; a thumbnail as a data URI in a markdown value renders
in place. Figures are kept to about 350×250 pixels so metadata stays small. matplotlib is
imported inside the functions (it is slow to import and only the assets that plot need it).
"""

from __future__ import annotations

import base64
import io


def figure_data_uri(fig) -> str:
    """A matplotlib figure as a PNG ``data:`` URI, then closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def markdown_image(uri: str, alt: str) -> str:
    return f"![{alt}]({uri})"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
