"""`vacelive weights list|check|download`: the weight files of a pipeline and where they come from."""
from __future__ import annotations

import argparse
import sys

from vacelive.engine.models_dir import (
    ENV_VAR,
    DownloadError,
    MissingWeightsError,
    check,
    download,
    models_dir,
    require,
)
from vacelive.engine.pipelines import CODECS, PLANNED_RECIPES, RECIPES, TEXT_ENCODERS, Recipe, WeightOptions, get_recipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    specs = {
        "list": "show each pipeline's files, where they come from and whether they are present",
        "check": "exit 1 and list every missing file if the pipeline cannot run",
        "download": "fetch the missing files from Hugging Face into the models folder",
    }
    for name, help_text in specs.items():
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("pipeline", nargs="?" if name == "list" else None,
                       help=f"one of: {', '.join(RECIPES)}")
        p.add_argument("--models", metavar="DIR", help=f"models folder (default: ${ENV_VAR} or ~/.vacelive/models)")
        p.add_argument("--codec", choices=CODECS, default="wan", help="VAE used by the run (default wan)")
        p.add_argument("--text-encoder", choices=TEXT_ENCODERS, default="bf16",
                       help="umT5 checkpoint: bf16 (Wan's, 11.4 GB) or fp8 (Kijai's, 6.7 GB)")
        if name == "download":
            p.add_argument("--all", action="store_true", help="also fetch the files of the other options")
            p.add_argument("--hf-cache", metavar="DIR",
                           help="Hugging Face cache to download into / reuse (default <models>/.hf-cache)")
            p.add_argument("--offline", action="store_true",
                           help="take files only from the HF cache, never the network")


def run(args: argparse.Namespace) -> int:
    try:
        options = WeightOptions(codec=args.codec, text_encoder=args.text_encoder)
        recipes = [get_recipe(args.pipeline)] if args.pipeline else list(RECIPES.values())
    except ValueError as exc:
        print(f"vacelive weights: {exc}", file=sys.stderr)
        return 2
    root = models_dir(args.models)
    if args.action == "list":
        return _list(recipes, options, root)
    recipe = recipes[0]
    if args.action == "check":
        return _check(recipe, options, root)
    try:
        placed = download(recipe, root, options, include_optional=args.all, cache_dir=args.hf_cache,
                          local_files_only=args.offline, report=print)
    except DownloadError as exc:
        print(f"vacelive weights: {exc}", file=sys.stderr)
        return 1
    print(f"{len(placed)} file(s) downloaded.")
    return _check(recipe, options, root)


def _list(recipes: list[Recipe], options: WeightOptions, root) -> int:
    print(f"models folder: {root}")
    for recipe in recipes:
        print(f"\n{recipe.name}: {recipe.title}")
        needed = set(recipe.needed(options))
        for f in recipe.files:
            path = root / f.path
            if path.is_file() and path.stat().st_size > 0:
                state = f"ok {path.stat().st_size / 2**30:6.2f} GB"
            else:
                state = "MISSING" if f in needed else "optional"
            when = f"  (only with --{f.option[0].replace('_', '-')} {f.option[1]})" if f.option else ""
            unverified = "  [source unverified, see docs/models.md]" if not f.verified else ""
            print(f"  {state:<16} {f.role:<13} {f.path}")
            print(f"  {'':<16} {'':<13} <- {f.repo_id} : {f.filename}{when}{unverified}")
    if len(recipes) > 1:
        print("\nplanned (not implemented yet): " + ", ".join(PLANNED_RECIPES))
    return 0


def _check(recipe: Recipe, options: WeightOptions, root) -> int:
    try:
        paths = require(recipe, options, root)
    except MissingWeightsError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{recipe.name}: all {len(recipe.needed(options))} file(s) present in {root}")
    for role, path in paths.items():
        print(f"  {role:<13} {path}")
    return 0
