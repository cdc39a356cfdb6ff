"""The web app served at /ui: static pages (HTML, CSS, ES modules; package data, no build step) whose every
datum comes from the API with the caller's key. See api/routes/ui.py."""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
