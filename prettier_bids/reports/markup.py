"""The one escaping rule of every HTML page and reportlet that prettier_bids writes.

Any text that comes from outside the code (file names and paths, BIDS entities and metadata, sidecar
values, crash files, weights names, the command line, the methods text of ``logs/CITATION.md``) goes
through :func:`text` before it is put into HTML: ``&``, ``<``, ``>``, ``"`` and ``'`` become entities, so
a BIDS_DIR named ``<img src=x onerror=alert(1)>`` is shown as that name and never becomes markup. Bidirectional
controls (U+202E RIGHT-TO-LEFT OVERRIDE in a file name shows ``gnp.exe`` as ``exe.png``) are shown as their code,
``\u202e``, as the logs show them.
"""

from __future__ import annotations

import html

#: Characters that reorder the text around them: shown by their code, never applied.
_BIDI_CONTROLS = {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def text(value):
    """``value`` (any object; ``str()`` of it) as HTML text, safe in element content and in quoted attributes."""
    return html.escape(str(value).translate(_BIDI_CONTROLS), quote=True)


def key(value):
    """A key of nireports' metadata tables (which split keys at underscores), as HTML text."""
    return text(value).replace("_", "&#95;")
