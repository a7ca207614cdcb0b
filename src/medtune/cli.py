"""The `medtune` command line: parses arguments and calls the stage functions, nothing more.

Run as: medtune --help
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medtune import __version__
from medtune.config import DTYPES, ConfigError, dtype_name, load_config, save_config

EPILOG = """\
the whole pipeline:
  run       prepare -> train [-> align] -> evaluate -> report on one config; finished stages are skipped
  demo      run on the embedded tiny default (configs/demo.yaml): CPU, offline, a few minutes

stages (each reads and writes only the run directory, output_dir in the config):
  plan      parameters, peak memory per GPU, steps and time for a config, before any download
            (exit status 3 when it does not fit --gpu-memory)
  prepare   validate, de-duplicate, split and tokenize the dialogue data -> data/
  train     LoRA fine-tuning -> adapter, checkpoints, train/eval results (resumes automatically)
  align     DPO / KTO / GRPO on top of the SFT adapter (config section align:) -> align/ (optional)
  evaluate  perplexity, model comparison, benchmarks, LLM judge, rubric grading, reference metrics,
            safety probe, contamination check -> eval/ (or ad hoc: medtune evaluate perplexity|compare|
            bench|judge|rubric|metrics|safety|contamination ...)
  report    report.md + self-contained report.html from the run directory's files (no torch)

use the result (RUN_DIR_OR_MODEL: a run directory with an adapter, or a model directory / hub id):
  merge     merge the LoRA adapter into the base model, verified, saved as safetensors
  chat      chat in the terminal (streaming, /think, /reset, /exit)
  serve     OpenAI-compatible API (/v1/chat/completions, /v1/models) and a web chat page at /

clinicians in the loop (RUN_DIR after evaluate):
  review    a blinded side-by-side review page for invited clinicians (review invite|stats|export|import)

examples:
  medtune demo
  medtune run configs/qwen3-8b-huatuo.yaml --set data.max_samples=1000
  medtune plan configs/qwen3-8b-huatuo.yaml --gpus 4 --gpu-memory 32GB
  medtune prepare configs/demo.yaml
  medtune prepare configs/qwen3-8b-huatuo.yaml --set data.max_samples=1000
  medtune align configs/demo.yaml --set align.max_steps=20 --force
  medtune evaluate configs/demo.yaml --set evaluate.max_questions=5
  medtune evaluate compare --model Qwen/Qwen3-8B --thinking both --output cmp/
  medtune report runs/demo --lang en

  medtune merge runs/demo --output runs/demo-merged --dtype bf16
  medtune chat runs/demo
  medtune chat runs/demo/align              # the aligned adapter
  medtune serve runs/demo --port 8000
  medtune review invite runs/demo --name "Dr. Li" && medtune review runs/demo
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.learning_rate=1e-4 (repeatable)")


def _config_argv(args) -> list[str]:
    """The config and its --set overrides as command-line words, for launching `medtune train` again."""
    return [args.config, *(word for item in args.overrides for word in ("--set", item))]


def _add_launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc-per-node", type=int, help="processes per machine (default: one per visible GPU)")
    p.add_argument("--nnodes", type=int, default=1, help="number of machines")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's rank (0..nnodes-1)")
    p.add_argument("--master-addr", default="127.0.0.1", help="address of the rank-0 machine")
    p.add_argument("--master-port", type=int, help="port on the rank-0 machine (default: a free port)")
    p.add_argument("--accelerate-config", metavar="FILE",
                   help="launch with `accelerate launch` and this config (FSDP, DeepSpeed: configs/accelerate/)")


def _launch_options(args):
    from medtune.train.launch import LaunchOptions

    return LaunchOptions(nproc_per_node=args.nproc_per_node, nnodes=args.nnodes, node_rank=args.node_rank,
                         master_addr=args.master_addr, master_port=args.master_port,
                         accelerate_config=args.accelerate_config)


def _add_force_stage(p: argparse.ArgumentParser) -> None:
    from medtune.run import STAGES

    p.add_argument("--force", action="append", default=[], choices=STAGES,
                   metavar="STAGE", help="rerun this stage even if it is up to date (repeatable)")


def _load(args) -> "object":
    cfg = load_config(args.config, args.overrides)
    save_config(cfg, Path(cfg.output_dir) / "config.yaml")  # exactly what ran
    return cfg


def cmd_prepare(args) -> int:
    from medtune.data import prepare_dataset

    prepare_dataset(_load(args), force=args.force)
    return 0


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="validate, de-duplicate, split and tokenize dialogue data",
                       description="Read ShareGPT/HuatuoGPT, OpenAI messages, Alpaca or CSV records, reject bad ones "
                                   "with reasons (data/rejected.jsonl), and write tokenized train/val datasets.")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="rerun even if data/ is up to date")
    p.set_defaults(func=cmd_prepare)


PLAN_DOES_NOT_FIT = 3
"""`medtune plan` exits with this when the plan does not fit --gpu-memory (scripts can test it)."""


def cmd_plan(args) -> int:
    from medtune.train.plan import format_plan, parse_memory, plan_config

    cfg = load_config(args.config, args.overrides)
    memory = parse_memory(args.gpu_memory) if args.gpu_memory else None
    result = plan_config(cfg, gpus=args.gpus, gpu_memory=memory, tokens_per_second=args.tokens_per_second,
                         samples=args.samples, shard_weights=args.fsdp)
    print(format_plan(cfg, result))
    return PLAN_DOES_NOT_FIT if result["plan"].fits is False else 0


def add_plan(sub) -> None:
    p = sub.add_parser("plan", help="parameters, peak GPU memory, steps and time for a config (downloads nothing)",
                       description="Build the base model from its config.json on the meta device, wrap it with the "
                                   "config's LoRA and print parameters, peak memory per GPU (weights, LoRA state, "
                                   "activations, logits chunk, headroom), steps, tokens and time, and what to change "
                                   "when it does not fit. Exit status: 0, or 3 when it does not fit --gpu-memory "
                                   "(2 for an error).")
    _add_config_args(p)
    p.add_argument("--gpus", type=_positive_int, default=1,
                   help="GPUs (data-parallel processes) in the run (default 1); steps and time depend on it")
    p.add_argument("--gpu-memory", metavar="SIZE", help="memory per GPU, e.g. 24GB, 80GB (GiB); enables the fit check")
    p.add_argument("--fsdp", action="store_true", help="the weights are sharded over the GPUs (FSDP / ZeRO-3)")
    p.add_argument("--tokens-per-second", type=_positive_float, metavar="N",
                   help="training rate of the whole run for the time estimate (default 950 per GPU)")
    p.add_argument("--samples", type=_positive_int, metavar="N",
                   help="training samples (default: the prepared data's, else data.max_samples)")
    p.set_defaults(func=cmd_plan)


def cmd_train(args) -> int:
    from medtune.train.launch import train_or_launch

    cfg = load_config(args.config, args.overrides)  # fail here, once, on a bad config
    return train_or_launch(cfg, _config_argv(args), _launch_options(args), resume=args.resume, force=args.force,
                           log=lambda message: print(message, flush=True))


def add_train(sub) -> None:
    p = sub.add_parser("train", help="LoRA fine-tuning on the prepared data (resumes automatically)",
                       description="Train a LoRA adapter with TRL SFTTrainer + PEFT on <output_dir>/data. Resumes from "
                                   "the latest complete checkpoint; launches one process per GPU when several are "
                                   "visible.")
    _add_config_args(p)
    p.add_argument("--resume", metavar="CHECKPOINT", help="resume from this checkpoint directory")
    p.add_argument("--force", action="store_true", help="train from scratch even if a finished adapter or "
                                                         "checkpoints exist (deletes the checkpoints)")
    _add_launch_args(p)
    p.set_defaults(func=cmd_train)


def cmd_align(args) -> int:
    from medtune.align import align_model

    align_model(_load(args), force=args.force, resume=args.resume)
    return 0


def add_align(sub) -> None:
    p = sub.add_parser("align", help="DPO / KTO / GRPO on top of the SFT adapter (config section align:)",
                       description="Train the run's SFT adapter further with TRL's DPO, KTO or GRPO trainer; the "
                                   "reference model is the SFT model. Data: preference/KTO/multiple-choice files "
                                   "(align.train_files) or pairs made from the SFT run itself (align.pairs: self). "
                                   "Writes <output_dir>/align/; resumes from its latest complete checkpoint.")
    _add_config_args(p)
    p.add_argument("--resume", metavar="CHECKPOINT", help="resume from this checkpoint directory")
    p.add_argument("--force", action="store_true", help="rerun even if align/ is up to date (deletes its checkpoints)")
    p.set_defaults(func=cmd_align)


def cmd_report(args) -> int:
    from medtune.report import write_report

    result = write_report(args.run_dir, lang=args.lang, output_dir=args.output)
    print(f"report: {result.markdown}")
    print(f"report: {result.html} (self-contained: {result.images} plots embedded, {result.tables} tables)")
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="write report.md and a self-contained report.html for a run directory",
                       description="Read only the files in RUN_DIR (config, data stats, training logs and results, "
                                   "evaluation results) and write report.md, report.html (plots and CSS embedded, "
                                   "no network) and plots/*.png. Stages that did not run are reported as not run. "
                                   "RUN_DIR must hold config.yaml and a stage's output; only files an earlier report "
                                   "wrote (listed in report_files.json) are ever replaced.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (output_dir of the config)")
    p.add_argument("--lang", choices=["zh", "en"], default=None,
                   help="report language (default: report.lang in RUN_DIR/config.yaml, else zh)")
    p.add_argument("--output", metavar="DIR", default=None,
                   help="write report.md, report.html and plots/ here instead of RUN_DIR")
    p.set_defaults(func=cmd_report)

def _add_dtype_arg(p: argparse.ArgumentParser, choices=DTYPES, default="auto",
                   help="weights dtype (auto: bf16 on GPU, else fp32)") -> None:
    # bfloat16, float16 and float32 (medtune 0.1's `evaluate` spelling) still work, with a deprecation note
    p.add_argument("--dtype", choices=choices, default=default, type=lambda value: dtype_name(value, "--dtype"),
                   help=help)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return value


def cmd_merge(args) -> int:
    from medtune.train.merge import merge_adapter

    merge_adapter(args.run_dir, args.output, dtype=args.dtype, force=args.force)
    return 0


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="merge the LoRA adapter into the base model (verified)",
                       description="Merge RUN_DIR's LoRA adapter into its base model and save a standalone model "
                                   "(safetensors, tokenizer, non-thinking generation_config.json). The merged logits "
                                   "are checked against base+adapter on real prompts before anything is written.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding adapter_config.json")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="where to write the merged model")
    _add_dtype_arg(p, help="dtype of the saved weights (default auto: the base model's, fp32 if it has none)")
    p.add_argument("--force", action="store_true", help="replace DIR if it is not empty")
    p.set_defaults(func=cmd_merge)


def cmd_chat(args) -> int:
    from medtune.serve.chat import run_chat

    run_chat(args.model, thinking=args.think, max_tokens=args.max_tokens, system=args.system,
             temperature=args.temperature, seed=args.seed, dtype=args.dtype)
    return 0


def add_chat(sub) -> None:
    p = sub.add_parser("chat", help="chat with the model in the terminal",
                       description="Terminal chat with streamed answers and multi-turn history. Commands: /think "
                                   "(toggle thinking, off by default), /reset (new conversation), /exit. Ctrl-C stops "
                                   "an answer; Ctrl-D quits.")
    p.add_argument("model", metavar="RUN_DIR_OR_MODEL", help="run directory (adapter), model directory or hub id")
    p.add_argument("--think", action="store_true", help="start with thinking on")
    p.add_argument("--max-tokens", type=_positive_int, default=1024, help="most tokens per answer (default 1024)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature; 0 = greedy (default: Qwen3's, 0.7 or 0.6 when thinking)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed, for repeatable answers")
    _add_dtype_arg(p)
    p.set_defaults(func=cmd_chat)


def cmd_serve(args) -> int:
    from medtune.serve import serve_model
    from medtune.serve.api import ServeSettings

    settings = ServeSettings(api_key=args.api_key or None, max_concurrent=args.max_concurrent,
                             max_tokens=args.max_tokens)
    serve_model(args.model, host=args.host, port=args.port, engine=args.engine, dtype=args.dtype, settings=settings,
                model_id=args.model_id, max_input_tokens=args.max_input_tokens, allowed_host=tuple(args.allowed_host))
    return 0


def add_serve(sub) -> None:
    import os

    p = sub.add_parser("serve", help="OpenAI-compatible API and web chat page",
                       description="Serve the model: POST /v1/chat/completions (streaming or not; thinking off unless "
                                   "a request sets enable_thinking), GET /v1/models, GET /health, POST /api/red-flags "
                                   "and a chat page at /. With an API key, only /v1/* needs it. Requests whose Host "
                                   "header is not the bound host's name get 400 (DNS rebinding). "
                                   "Engine: vLLM with the LoRA adapter on a CUDA GPU when vllm is installed, "
                                   "transformers otherwise.")
    p.add_argument("model", metavar="RUN_DIR_OR_MODEL", help="run directory (adapter), model directory or hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port, 1-65535 (default 8000); checked before loading")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests with this Host name, e.g. a reverse proxy's (repeatable; default: "
                        "localhost, 127.0.0.1, ::1 on loopback, the --host address otherwise, any on 0.0.0.0)")
    p.add_argument("--api-key", default=os.environ.get("MEDTUNE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $MEDTUNE_API_KEY; none if unset); "
                        "/, /health and /api/red-flags never need it")
    p.add_argument("--max-concurrent", type=_positive_int, default=4,
                   help="requests running at once; more get HTTP 429 (default 4)")
    p.add_argument("--max-tokens", type=_positive_int, default=1024,
                   help="most tokens one request may generate, and the default (default 1024)")
    p.add_argument("--max-input-tokens", type=_positive_int, default=None,
                   help="most prompt tokens after the chat template (default: the model's context minus --max-tokens)")
    p.add_argument("--engine", choices=["auto", "vllm", "transformers"], default="auto",
                   help="auto: vLLM when installed on a CUDA GPU, else transformers")
    p.add_argument("--model-id", default=None, help="the model name clients use (default: the directory's name)")
    _add_dtype_arg(p)
    p.set_defaults(func=cmd_serve)


# -- review: `medtune review RUN_DIR` serves; `medtune review invite|stats|export|import RUN_DIR ...` --

REVIEW_ACTIONS = ("invite", "stats", "export", "import")


def review_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medtune review")
    sub = p.add_subparsers(dest="action", required=True)
    invite = sub.add_parser("invite", help="print a personal review link for a reviewer (a new random token)")
    invite.add_argument("run_dir", metavar="RUN_DIR")
    invite.add_argument("--name", required=True, help="the reviewer's name (inviting again retires the old link)")
    invite.add_argument("--url", default=None,
                        help="the address reviewers open, e.g. https://review.example.org (default: "
                             "http://127.0.0.1:8765)")
    stats = sub.add_parser("stats", help="win rates, Bradley-Terry ranking, flags, agreement -> review/stats.json")
    stats.add_argument("run_dir", metavar="RUN_DIR")
    export = sub.add_parser("export", help="preference pairs for `medtune align` -> review/preference_pairs.jsonl")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--label-studio", action="store_true",
                        help="also write review/label_studio_tasks.json (Label Studio's task JSON, pairwise)")
    imp = sub.add_parser("import", help="import judgments from a Label Studio JSON export (pairwise)")
    imp.add_argument("run_dir", metavar="RUN_DIR")
    imp.add_argument("file", metavar="FILE", help="Label Studio's JSON export of the tasks `export --label-studio` wrote")
    return p


def cmd_review(args) -> int:
    if args.target not in REVIEW_ACTIONS:
        serve = argparse.ArgumentParser(prog="medtune review")
        serve.add_argument("run_dir", metavar="RUN_DIR")
        serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        serve.add_argument("--port", type=int, default=8765, help="port, 1-65535 (default 8765)")
        serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                           help="also answer requests with this Host name, e.g. a reverse proxy's (repeatable)")
        serve_args = serve.parse_args([args.target, *args.rest])
        from medtune.review import serve_review

        serve_review(serve_args.run_dir, host=serve_args.host, port=serve_args.port,
                     allowed_host=tuple(serve_args.allowed_host))
        return 0
    a = review_parser().parse_args([args.target, *args.rest])
    if a.action == "invite":
        from medtune.review import invite_reviewer

        invite_reviewer(a.run_dir, a.name, url=a.url)
    elif a.action == "stats":
        from medtune.review.stats import write_review_stats

        write_review_stats(a.run_dir)
    elif a.action == "export":
        from medtune.review.export import export_pairs, export_label_studio

        export_pairs(a.run_dir)
        if a.label_studio:
            export_label_studio(a.run_dir)
    else:
        from medtune.review.export import import_label_studio

        import_label_studio(a.run_dir, a.file)
    return 0


def add_review(sub) -> None:
    p = sub.add_parser(
        "review", help="blinded clinician review of a run's answers (invite, stats, export, import)",
        usage="medtune review RUN_DIR [--host 127.0.0.1] [--port 8765] [--allowed-host NAME]\n"
              "       medtune review invite RUN_DIR --name NAME [--url URL]\n"
              "       medtune review stats RUN_DIR\n"
              "       medtune review export RUN_DIR [--label-studio]\n"
              "       medtune review import RUN_DIR LABEL_STUDIO_EXPORT.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the run's evaluation answers (comparison questions, consultations, safety prompts) to\n"
                    "invited reviewers, model names hidden and order randomized per reviewer; every judgment is\n"
                    "saved at once to RUN_DIR/review/review.sqlite (+ judgments.jsonl).\n"
                    "  invite  a personal link (random token, stored hashed); every request needs one\n"
                    "  stats   human win rates, Bradley-Terry ranking, accuracy and safety flags, agreement between\n"
                    "          reviewers and with the LLM judge -> review/stats.json (the report reads it)\n"
                    "  export  preference pairs (chosen = the majority's choice, ties dropped, an answer flagged\n"
                    "          unsafe never chosen) -> review/preference_pairs.jsonl, for align.train_files\n"
                    "  import  judgments from Label Studio's JSON export")
    p.add_argument("target", metavar="RUN_DIR | ACTION", help="a run directory to serve, or invite|stats|export|import")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_review)


def cmd_evaluate(args) -> int:
    from medtune.evaluate.cli import build_parser as build_evaluations

    evaluations, names = build_evaluations()
    if args.target in names:  # the first word names an evaluation: `medtune evaluate compare --model M ...`
        sub_args = evaluations.parse_args([args.target, *args.rest])
        return sub_args.func(sub_args)
    if not Path(args.target).is_file():  # anything else is a config file
        from medtune.errors import UserError

        raise UserError(f"evaluate: no config file '{args.target}'; give a YAML config, or one of the "
                        f"evaluations: {', '.join(names)}")
    stage = argparse.ArgumentParser(prog="medtune evaluate", description="Run the evaluate stage of a config.")
    _add_config_args(stage)
    stage.add_argument("--force", action="store_true", help="rerun every part even if eval/ is up to date")
    stage_args = stage.parse_args([args.target, *args.rest])
    from medtune.evaluate import evaluate_run

    evaluate_run(_load(stage_args), force=stage_args.force)
    return 0


def add_evaluate(sub) -> None:
    from medtune.evaluate.cli import build_parser as build_evaluations
    from medtune.evaluate.cli import overview

    names = build_evaluations()[1]
    p = sub.add_parser(
        "evaluate", help="perplexity, model comparison, reference metrics, safety probe",
        usage="medtune evaluate CONFIG [--set SECTION.KEY=VALUE ...] [--force]\n"
              "       medtune evaluate EVALUATION [options]   (ad hoc, any model, no config)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The first word decides, by name only:\n"
                    f"  EVALUATION  one of {', '.join(names)}: that evaluation, ad hoc\n"
                    "  CONFIG      anything else: a config file (one named like an evaluation: ./NAME)\n\n"
                    "With a config: run what its evaluate: section asks for on the run directory, writing\n"
                    "eval/ (perplexity.json, compare/, metrics.json, safety.json, contamination.json); parts whose\n"
                    "inputs are unchanged are skipped unless --force.",
        epilog=overview())
    p.add_argument("target", metavar="CONFIG | EVALUATION", help="a YAML config, or one of the ad hoc evaluations")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)


def cmd_run(args) -> int:
    from medtune.run import run_pipeline

    cfg = load_config(args.config, args.overrides)
    run_pipeline(cfg, force=tuple(args.force), launch=_launch_options(args))
    return 0


def add_run(sub) -> None:
    p = sub.add_parser("run", help="prepare -> train [-> align] -> evaluate -> report, skipping finished stages",
                       description="Run every stage on one run directory. A stage whose outputs exist for unchanged "
                                   "inputs is skipped; after a failure, rerunning continues from there (training "
                                   "resumes from its last complete checkpoint). Training launches one process per GPU "
                                   "when several are visible, with the same launch options as `medtune train`.")
    _add_config_args(p)
    _add_force_stage(p)
    _add_launch_args(p)
    p.set_defaults(func=cmd_run)


def cmd_demo(args) -> int:
    from medtune.run import demo_config, run_pipeline
    from medtune.train.launch import LaunchOptions

    # the demo trains in this process, on any machine
    run_pipeline(demo_config(args.output), force=tuple(args.force), launch=LaunchOptions(nproc_per_node=1))
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the embedded tiny default (CPU, offline, minutes)",
                       description="medtune run configs/demo.yaml: a tiny random Qwen3 with the real Qwen3 tokenizer, "
                                   "trained on data/demo, evaluated and reported. Needs no GPU and no network.")
    p.add_argument("--output", metavar="DIR", help="run directory (default: runs/demo in the project)")
    _add_force_stage(p)
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtune", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Fine-tune an open LLM into a medical QA assistant, evaluate it fairly, and write the report.")
    parser.add_argument("--version", action="version", version=f"medtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_run(sub)
    add_demo(sub)
    add_prepare(sub)
    add_plan(sub)
    add_train(sub)
    add_align(sub)
    add_evaluate(sub)
    add_report(sub)
    add_merge(sub)
    add_chat(sub)
    add_serve(sub)
    add_review(sub)
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
