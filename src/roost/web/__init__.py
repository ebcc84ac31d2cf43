"""The browser messenger's built bundle (``static/``: index.html, app.js, app.css, favicon.svg).

Built from ``web/`` at the repository root (``npm run build`` there, docs/web.md) and
committed, so a machine with only Python serves the page; a test rebuilds it and checks the
committed files are byte-identical to the build."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
