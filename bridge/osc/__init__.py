"""OSC control for vacelive: server, coercion rules, feedback, OSCQuery (see docs/osc.md)."""
from vacelive.bridge.osc.server import OscConfig, OscServer, add_cli_arguments, parse_hostport

__all__ = ["OscConfig", "OscServer", "add_cli_arguments", "parse_hostport"]
