"""One module per `vacelive` subcommand (see bridge/cli.py)."""
