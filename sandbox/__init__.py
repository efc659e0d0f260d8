"""mailwarden's local stand-in for Microsoft Entra ID and Microsoft Graph (see README.md).

Imports nothing from monitor/, checks/ or alerts/.
"""

from .server import Sandbox

__all__ = ["Sandbox", "main"]


def main(argv: list[str] | None = None) -> int:
    from .cli import main as _main

    return _main(argv)
