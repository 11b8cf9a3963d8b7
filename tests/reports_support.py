"""Checks shared by the report tests."""

from __future__ import annotations

import re


def embedded_pngs(svg_text):
    return re.findall(r"data:image/png;base64,", svg_text)


def assert_flicker_svg(svg_text, flicker=True, planes=3):
    """An nipreps reportlet: a flicker has a background and a foreground group (one image per plane
    each) and the flickerAnimation CSS; a static one has the images and no animation."""
    text = svg_text.lstrip()
    text = text[len("<!-- prettier_bids figure -->"):] if text.startswith("<!-- prettier_bids figure -->") else text
    assert text.startswith("<svg") and svg_text.rstrip().endswith("</svg>")
    n = len(embedded_pngs(svg_text))
    if flicker:
        assert svg_text.count('class="background-svg"') == 1 and svg_text.count('class="foreground-svg"') == 1
        assert "@keyframes flickerAnimation" in svg_text and ".foreground-svg:hover" in svg_text
        background, foreground = svg_text.split('class="foreground-svg"')
        assert len(embedded_pngs(background)) >= planes and len(embedded_pngs(foreground)) >= planes
    else:
        assert "flickerAnimation" not in svg_text and "foreground-svg" not in svg_text
        assert n >= planes
