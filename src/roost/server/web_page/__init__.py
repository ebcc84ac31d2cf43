"""Serves the browser messenger (``roost.web``) at ``/`` with a same-origin-only CSP."""
