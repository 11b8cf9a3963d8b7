"""Reports that work offline: no generated page loads anything from the network.

nireports' report template loads jQuery and Bootstrap from CDNs; offline (hospitals, clusters) the page
would be unstyled, its navbar a bullet list and every accordion open. The same files ship with the package
(``prettier_bids/data/static/``, byte-identical: the template's integrity hashes match); :func:`install_assets`
copies them into ``OUTPUT_DIR/prettier/static/`` and :func:`localize` points a page at them.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..sr.io import copy_file_atomic

#: Vendored assets (``prettier_bids/data/static/``).
ASSET_DIR = Path(__file__).resolve().parent.parent / "data" / "static"
#: Their folder inside the derivatives dataset (a page at the dataset's top level links ``static/<file>``).
STATIC = "static"
#: Remote URL in nireports' template -> vendored file.
ASSETS = {
    "https://code.jquery.com/jquery-3.6.0.min.js": "jquery-3.6.0.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.3/dist/css/bootstrap.min.css": "bootstrap-5.2.3.min.css",
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.3/dist/js/bootstrap.bundle.min.js": "bootstrap-5.2.3.bundle.min.js",
}

# A tag that loads something: <script src=...>, <link href=...>, <img src=...>, <iframe src=...>, ...
_LOADING_TAG = re.compile(r"<(script|link|img|iframe|embed|object|source|audio|video)\b[^>]*>", re.I | re.S)
_URL_ATTR = re.compile(r"""\b(src|href|data)\s*=\s*(["'])(.*?)\2""", re.I | re.S)
_SRI_ATTRS = re.compile(r"""\s+(integrity|crossorigin)\s*=\s*(["']).*?\2""", re.I | re.S)
_STYLE_URL = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])\s*(https?:)?//""", re.I)


def remote_urls(text):
    """Every remote (``http(s)://`` or protocol-relative ``//``) URL that a page would load: in a script,
    link, img, iframe, ... tag, or a CSS ``url(...)``/``@import``. Empty for a page that works offline."""
    found = []
    for tag in _LOADING_TAG.finditer(text):
        for attr in _URL_ATTR.finditer(tag.group(0)):
            url = attr.group(3).strip()
            if re.match(r"(https?:)?//", url, re.I):
                found.append(url)
    found += [m.group(0) for m in _STYLE_URL.finditer(text)]
    return found


def localize(text, prefix=STATIC):
    """``text`` with every vendored CDN URL replaced by ``<prefix>/<file>`` (and the tags' ``integrity`` and
    ``crossorigin`` attributes dropped: a browser refuses cross-origin checks on local files)."""
    def fix(tag):
        tag_text = tag.group(0)
        hit = [url for url in ASSETS if url in tag_text]
        if not hit:
            return tag_text
        tag_text = _SRI_ATTRS.sub("", tag_text)
        return tag_text.replace(hit[0], f"{prefix}/{ASSETS[hit[0]]}")

    return _LOADING_TAG.sub(fix, text)


def install_assets(root):
    """Copy the vendored files into ``<root>/static/`` (atomic; only those missing or different)."""
    folder = Path(root) / STATIC
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(ASSETS.values())):
        src, dst = ASSET_DIR / name, folder / name
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            copy_file_atomic(src, dst)
    return folder
