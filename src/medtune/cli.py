"""The `medtune` command line: parses arguments and calls the stage functions, nothing more.

Run as: medtune --help
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medtune import __version__
from medtune.config import ConfigError, load_config, save_config

EPILOG = """\
stages (each reads and writes only the run directory, output_dir in the config):
  prepare   validate, de-duplicate, split and tokenize the dialogue data -> data/
  train     LoRA fine-tuning -> adapter, checkpoints, train/eval results
  evaluate  perplexity, model comparison, reference metrics, safety probe -> eval/
            (or ad hoc on any model: medtune evaluate perplexity|compare|metrics|safety ...)

examples:
  medtune prepare configs/demo.yaml
  medtune prepare configs/qwen3-8b-huatuo.yaml --set data.max_samples=1000
  medtune evaluate configs/demo.yaml --set evaluate.max_questions=5
  medtune evaluate compare --model Qwen/Qwen3-8B --thinking both --output cmp/
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.learning_rate=1e-4 (repeatable)")


def _load(args) -> "object":
    cfg = load_config(args.config, args.overrides)
    save_config(cfg, Path(cfg.output_dir) / "config.yaml")  # exactly what ran
    return cfg


def cmd_prepare(args) -> int:
    from medtune.prepare import prepare_dataset

    prepare_dataset(_load(args), force=args.force)
    return 0


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="validate, de-duplicate, split and tokenize dialogue data",
                       description="Read ShareGPT/HuatuoGPT, OpenAI messages, Alpaca or CSV records, reject bad ones "
                                   "with reasons (data/rejected.jsonl), and write tokenized train/val datasets.")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="rerun even if data/ is up to date")
    p.set_defaults(func=cmd_prepare)


def cmd_evaluate(args) -> int:
    from medtune.evaluate.cli import build_parser as build_evaluations

    evaluations, names = build_evaluations()
    if args.target in names:  # an ad hoc evaluation, e.g. `medtune evaluate compare --model M ...`
        sub_args = evaluations.parse_args([args.target, *args.rest])
        return sub_args.func(sub_args)
    if not Path(args.target).exists() and Path(args.target).suffix not in (".yaml", ".yml"):
        from medtune.errors import UserError

        raise UserError(f"evaluate: '{args.target}' is neither a config file nor an evaluation ({', '.join(names)})")
    stage = argparse.ArgumentParser(prog="medtune evaluate", description="Run the evaluate stage of a config.")
    _add_config_args(stage)
    stage.add_argument("--force", action="store_true", help="rerun every part even if eval/ is up to date")
    stage_args = stage.parse_args([args.target, *args.rest])
    from medtune.evaluate.stage import evaluate_run

    evaluate_run(_load(stage_args), force=stage_args.force)
    return 0


def add_evaluate(sub) -> None:
    from medtune.evaluate.cli import overview

    p = sub.add_parser(
        "evaluate", help="perplexity, model comparison, reference metrics, safety probe",
        usage="medtune evaluate CONFIG [--set SECTION.KEY=VALUE ...] [--force]\n"
              "       medtune evaluate EVALUATION [options]   (ad hoc, any model, no config)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="With a config: run what its evaluate: section asks for on the run directory, writing\n"
                    "eval/ (perplexity.json, compare/, metrics.json, safety.json); parts whose inputs are\n"
                    "unchanged are skipped unless --force.",
        epilog=overview())
    p.add_argument("target", metavar="CONFIG | EVALUATION", help="a YAML config, or one of the ad hoc evaluations")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtune", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Fine-tune an open LLM into a medical QA assistant, evaluate it fairly, and write the report.")
    parser.add_argument("--version", action="version", version=f"medtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_prepare(sub)
    add_evaluate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from medtune.errors import UserError

    try:
        return args.func(args)
    except (ConfigError, UserError) as e:
        print(f"medtune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medtune: interrupted", file=sys.stderr)
        return 130
