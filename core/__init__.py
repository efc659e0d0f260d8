"""mailwarden: health checks and secret-rotation monitoring for Microsoft 365 mailbox integrations.

This package is the kernel: the types and pure functions every layer shares (``outcome``: Status and Outcome;
``state``: the pure state machine; ``durations``; ``days``; ``endpoints``; ``errors``; ``redact``; ``columns``: the
timestamp column every table shares). It imports
nothing of mailwarden's and does no I/O. The layers install beneath it: ``mailwarden.checks`` <-
``mailwarden.alerts`` <- ``mailwarden.monitor`` (the application; ``monitor.web`` and ``monitor.cli`` on top), with
``mailwarden.dashboards`` holding templates and static files. The sandbox is ``mailwarden_sandbox``.
"""
