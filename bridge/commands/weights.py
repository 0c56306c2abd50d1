"""`vacelive weights list|check|download`: the weight files of a pipeline and where they come from."""
from __future__ import annotations

import argparse
import sys

from vacelive.engine.models_dir import (
    ENV_VAR,
    DownloadError,
    MissingWeightsError,
    download,
    models_dir,
    require,
)
from vacelive.engine.annotator_models import ANNOTATOR_MODELS, AnnotatorDownloadError, AnnotatorModel
from vacelive.engine.annotator_models import download as download_annotator
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
        p.add_argument("pipeline", nargs="?",
                       help=f"a pipeline ({', '.join(RECIPES)}) or an annotator "
                            f"({', '.join(ANNOTATOR_MODELS)})")
        p.add_argument("--pipeline", dest="pipeline_flag", metavar="NAME",
                       help="the pipeline as a flag, as in `vacelive serve --pipeline NAME`")
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
    flag = getattr(args, "pipeline_flag", None)
    if flag and args.pipeline and flag != args.pipeline:
        print(f"vacelive weights: two pipelines given ({args.pipeline!r} and --pipeline {flag!r})", file=sys.stderr)
        return 2
    args.pipeline = flag or args.pipeline
    if args.pipeline is None and args.action != "list":
        print(f"vacelive weights {args.action}: name a pipeline ({', '.join(RECIPES)})", file=sys.stderr)
        return 2
    if args.pipeline in ANNOTATOR_MODELS:
        return _annotator(args, ANNOTATOR_MODELS[args.pipeline], models_dir(args.models))
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
    if len(recipes) > 1 and PLANNED_RECIPES:
        print("\nplanned (not implemented yet): " + ", ".join(PLANNED_RECIPES))
        print("\nannotators (vacelive weights download <name>):")
        for m in ANNOTATOR_MODELS.values():
            for f in m.files:
                path = root / f.path
                state = "ok" if path.is_file() and path.stat().st_size > 0 else "missing"
                print(f"  {state:<16} {m.name:<13} {f.path}")
                print(f"  {'':<16} {'':<13} <- {f.source}  [{m.license}]")
    return 0


def _annotator(args: argparse.Namespace, model: AnnotatorModel, root) -> int:
    """list / check / download of one annotator's weights (engine.annotator_models)."""
    if args.action == "download":
        try:
            placed = download_annotator(model, root, cache_dir=args.hf_cache, local_files_only=args.offline)
        except AnnotatorDownloadError as exc:
            print(f"vacelive weights: {exc}", file=sys.stderr)
            return 1
        print(f"{len(placed)} file(s) downloaded.")
    missing = model.missing(root)
    if missing:
        print(f"{model.name} ({model.title}): {len(missing)} file(s) missing in {root}:", file=sys.stderr)
        for f in missing:
            print(f"  - {root / f.path}\n      from {f.source}", file=sys.stderr)
        print(f"Download them with:\n  {model.download_command} --models {root}", file=sys.stderr)
        return 1
    print(f"{model.name} ({model.title}, {model.license}): all {len(model.files)} file(s) present in {root}")
    for f in model.files:
        print(f"  {root / f.path}")
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
