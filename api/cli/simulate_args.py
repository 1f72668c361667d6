"""The arguments of ``afterhours call`` and ``afterhours simulate`` (run by
api/cli/simulate.py), apart from it: parsing a command line must not import the simulated
caller, httpx and Trio, which take a second or more on a busy machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

# engine/simulator/caller.py CALLER_SCRIPTS's names (a test keeps the two the same).
CALLER_SCRIPT_NAMES = ("conversation", "quick", "silent", "emergency", "booking")


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Adds ``call`` and ``simulate``; returns ``call``'s parser, which also has ``call
    show SID`` (api/cli/admin.py), so its --to is checked by the caller: ``required``
    here would refuse ``call show``."""
    one = commands.add_parser(
        "call", help="place one simulated call through the engine (or: call show SID)"
    )
    many = commands.add_parser("simulate", help="place many simulated calls, some at once")
    many.add_argument("--calls", type=int, default=10)
    many.add_argument("--concurrency", type=int, default=5)
    for sub in (one, many):
        sub.add_argument("--to", required=sub is many, help="the project's number (E.164)")
        sub.add_argument("--from", dest="from_number", default="+15550100000")
        sub.add_argument("--script", default="conversation", choices=CALLER_SCRIPT_NAMES)
        sub.add_argument("--url", help="the engine's base URL (default: http://HOST:PORT)")
        sub.add_argument(
            "--business",
            metavar="PROJECT_FILE",
            help="serve the simulated business backend (get_slots, book_appointment) at this "
            "project file's function_url (a loopback http:// URL), with its function_secret",
        )
    return one
