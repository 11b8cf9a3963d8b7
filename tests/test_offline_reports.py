"""Offline reports: nireports' template loads jQuery and Bootstrap from CDNs; the app points every page at
the vendored copies instead (prettier_bids/reports/offline.py)."""

import hashlib
import base64

from prettier_bids.reports.offline import ASSET_DIR, ASSETS, install_assets, localize, remote_urls


def _template():
    from importlib import resources

    return (resources.files("nireports.assembler") / "data" / "report.tpl").read_text()


def test_nireports_template_loads_remote_assets_that_localize_replaces():
    tpl = _template()
    assert sorted(remote_urls(tpl)) == sorted(ASSETS)  # the template as shipped needs the network
    assert remote_urls(localize(tpl)) == []


def test_vendored_files_are_the_cdn_files():
    """The template's subresource-integrity hashes match the vendored bytes: the same files, not look-alikes."""
    import re

    tpl = _template()
    for url, name in ASSETS.items():
        tag = next(m.group(0) for m in re.finditer(r"<(?:script|link)\b[^>]*>", tpl) if url in m.group(0))
        algo, digest = re.search(r'integrity="(sha\d+)-([^"]+)"', tag).groups()
        data = (ASSET_DIR / name).read_bytes()
        assert base64.b64encode(hashlib.new(algo, data).digest()).decode() == digest, name


def test_remote_urls_finds_every_loading_form():
    page = """<img src="https://x.org/a.png"><link rel=stylesheet href='//cdn.x/b.css'>
    <script src="http://x/c.js"></script><style>@import "https://x/d.css"; p{background:url(https://x/e.png)}</style>
    <a href="https://example.org">a link is not loaded</a><img src="static/f.png">"""
    found = remote_urls(page)
    assert len(found) == 5 and "https://example.org" not in found


def test_install_assets_copies_once(tmp_path):
    folder = install_assets(tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(ASSETS.values())
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    install_assets(tmp_path)
    assert before == {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
