"""`vacelive keys`: CURVE keypairs for the remote link (engine on a GPU box, relay beside TD)."""
from __future__ import annotations

import argparse

from vacelive.bridge.link.keys import generate_keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="keys", help="folder for the key layout (default: ./keys)")
    parser.add_argument("--client", default="relay",
                        help="name of the relay keypair to create (run again with another name to "
                             "authorize a second relay; existing keys are kept)")
    parser.add_argument("--force", action="store_true", help="regenerate keys that already exist")


def run(args: argparse.Namespace) -> int:
    paths = generate_keys(args.dir, args.client, force=args.force)
    made = lambda created: "created" if created else "kept"  # noqa: E731
    print(f"engine keypair  {made(paths.created_engine)}: {paths.engine_dir}")
    print(f"relay '{args.client}' keypair {made(paths.created_client)}: {paths.client_dir}")
    print()
    print("Copy what where:")
    print(f"  GPU box (engine):         {paths.engine_dir}/   (keep engine.key_secret private)")
    print(f"      vacelive engine --listen tcp://0.0.0.0:5555 --keys {paths.engine_dir}")
    print(f"  TouchDesigner machine:    {paths.client_dir}/   (relay keypair + engine.key)")
    print(f"      vacelive relay --engine tcp://GPU-BOX:5555 --keys {paths.client_dir}")
    print(f"  Authorized relays live in {paths.engine_dir / 'authorized_clients'}; restart the")
    print("  engine after adding one. Never copy a *.key_secret file anywhere but its own machine.")
    if paths.created_engine and not paths.created_client:
        print("  NOTE: the engine key changed: copy engine.key to every relay folder again.")
    return 0
