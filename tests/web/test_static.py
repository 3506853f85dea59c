"""The UI's own assets: readable colours, nothing fetched from elsewhere, and the
vendored chart library matching its lockfile."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "egenmon" / "web"

# (text, background) pairs the style sheet puts together, by variable name.
PAIRS = [
    ("text", "bg"),
    ("text", "card"),
    ("muted", "card"),
    ("muted", "bg"),
    ("primary", "card"),
    ("high", "high-bg"),
    ("medium", "medium-bg"),
    ("low", "low-bg"),
    ("ok", "ok-bg"),
    ("high", "card"),
    ("medium", "card"),
]


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_colours_have_at_least_aa_contrast():
    css = (WEB / "static" / "app.css").read_text()
    colours = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6});", css))
    for fg, bg in PAIRS:
        ratio = contrast(colours[fg], colours[bg])
        assert ratio >= 4.5, (fg, bg, round(ratio, 2))


def test_templates_and_assets_load_nothing_from_other_hosts():
    for path in [
        *WEB.glob("templates/*.html"),
        *WEB.glob("static/*.js"),
        *WEB.glob("static/*.css"),
    ]:
        text = path.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path
        assert "@import" not in text and "cdn" not in text.lower(), path
        assert "<script>" not in text, path  # no inline script, only src= or JSON blocks


def test_the_vendored_chart_library_is_the_locked_version():
    lock = json.loads((WEB / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/chart.js"]["version"]
    assert json.loads((WEB / "package.json").read_text())["dependencies"]["chart.js"] == version
    vendored = (WEB / "static" / "vendor" / "chart.umd.min.js").read_text()
    assert f"Chart.js v{version}" in vendored[:200]
    stamp = (WEB / "static" / "vendor" / ".lock-sha256").read_text().strip()
    assert stamp == hashlib.sha256((WEB / "package-lock.json").read_bytes()).hexdigest()
