"""The one escaping rule of every HTML page and reportlet that prettier_bids writes.

Any text that comes from outside the code (file names and paths, BIDS entities and metadata, sidecar
values, crash files, weights names, the command line, the methods text of ``logs/CITATION.md``) goes
through :func:`text` before it is put into HTML: ``&``, ``<``, ``>``, ``"`` and ``'`` become entities, so
a BIDS_DIR named ``<img src=x onerror=alert(1)>`` is shown as that name and never becomes markup.
"""

from __future__ import annotations

import html


def text(value):
    """``value`` (any object; ``str()`` of it) as HTML text, safe in element content and in quoted attributes."""
    return html.escape(str(value), quote=True)


def key(value):
    """A key of nireports' metadata tables (which split keys at underscores), as HTML text."""
    return text(value).replace("_", "&#95;")
