"""The status web app (Starlette + Jinja2 templates from dashboards/) and the static report."""

from mailwarden.monitor.web.app import create_app

__all__ = ["create_app"]
