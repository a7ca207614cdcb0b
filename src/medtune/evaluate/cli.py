"""`medtune evaluate EVALUATION ...`: each evaluation ad hoc, on any model, without a config.

Run as: medtune evaluate perplexity|compare|bench|judge|rubric|metrics|safety|contamination --help

Parses arguments and calls the evaluate functions, nothing more. (`medtune evaluate CONFIG` runs the
stage; see medtune/cli.py.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medtune.assets import PROJECT_ROOT
from medtune.config import DTYPE_NAMES, DTYPES, dtype_name
from medtune.data.mcq import FORMATS
from medtune.evaluate.bench import METHODS
from medtune.evaluate.consult import FORMAT as CONSULT_FORMAT

DEFAULT_QUESTIONS = PROJECT_ROOT / "data" / "questions" / "zh_everyday.jsonl"
DEFAULT_SAFETY = PROJECT_ROOT / "data" / "safety" / "redflags_zh.jsonl"
HELP = {
    "perplexity": "eval loss and perplexity on tokenized dialogues",
    "compare": "answer a question set with one or more models, timed like the reference",
    "metrics": "ROUGE-L, BLEU-4 and Distinct-1/2 on characters against references",
    "safety": "red-flag prompts: does the model send people to urgent care / refuse harm?",
    "bench": "medical benchmarks: multiple choice (CMMLU, CMExam, CMB, MedQA), multi-turn (CMB-Clin)",
    "judge": "pairwise LLM-as-judge through an OpenAI-compatible endpoint, both orders",
    "rubric": "rubric-graded conversations (HealthBench layout), criterion by criterion by a grader endpoint",
    "contamination": "a config's evaluation inputs against its training data: exact and 8-gram overlap",
}


def _add_model_args(p: argparse.ArgumentParser, several: bool) -> None:
    p.add_argument("--model", metavar="PATH_OR_ID", required=not several,
                   help="base model: hub id, directory, or builtin:tiny-qwen3"
                        + ("; or give several models with --arms" if several else ""))
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter directory (loaded unmerged)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, type=lambda value: dtype_name(value, "--dtype"),
                   help="weights dtype (auto: bf16 on a CUDA GPU that has it, else fp32; bfloat16, float16 and "
                        "float32 are deprecated spellings)")


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arms", metavar="ARMS.yaml", help="several models: a YAML list shaped like the config's "
                   "evaluate.compare (name, model, adapter, prompt_format, thinking, generation, base_url, ...)")
    p.add_argument("--name", help="the model's name in the outputs (default: the last part of --model)")
    p.add_argument("--thinking", choices=["off", "on", "both"], default="off",
                   help="chat-template thinking (hybrid models such as Qwen3); both = two arms")
    p.add_argument("--prompt-format", default="chat_template", metavar="FORMAT",
                   help="chat_template (the model's own) or a plain format with {question}, e.g. "
                        "'<human>:{question}\\n<bot>:' (used verbatim)")
    p.add_argument("--system-prompt", help="system message (chat_template only)")
    p.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible endpoint serving --model (e.g. "
                   "http://localhost:8000/v1)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the endpoint's key (default OPENAI_API_KEY)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--greedy", action="store_true", help="greedy decoding (default: Qwen3's recommended sampling, "
                   "0.7/0.8/20 without thinking, 0.6/0.95/20 with)")
    p.add_argument("--seed", type=int, default=0, help="question i is sampled with seed + i")
    p.add_argument("--engine", default="auto", choices=["auto", "transformers", "vllm"],
                   help="local engine (auto: vLLM when installed with CUDA, else transformers)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per batch / concurrent requests")


def _arms(args):
    from medtune.config import CompareModel, ConfigError, GenerationConfig, load_compare_models
    from medtune.evaluate.arms import resolve_arms, short_name

    try:
        generation = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=not args.greedy, seed=args.seed)
        if args.arms:
            if args.model:
                raise ConfigError("give either --model or --arms, not both")
            models = load_compare_models(args.arms)
        elif not args.model:
            raise ConfigError("give --model PATH_OR_ID (or several models with --arms ARMS.yaml)")
        else:
            thinking = {"off": [False], "on": [True], "both": [False, True]}[args.thinking]
            name = args.name or short_name(args.model)
            models = [CompareModel(name=name, model=args.model, adapter=args.adapter, prompt_format=args.prompt_format,
                                   system_prompt=args.system_prompt, thinking=thinking, base_url=args.base_url,
                                   api_key_env=args.api_key_env)]
    except ValueError as e:  # the config classes' own checks
        raise ConfigError(str(e)) from None
    return resolve_arms(models, generation)


def _judge(args):
    """The judge endpoint of --judge-base-url, --judge-model and --judge-api-key-env, or None."""
    from medtune.generate.judge import judge_endpoint

    return judge_endpoint(args.judge_base_url, args.judge_model, args.judge_api_key_env,
                          ("--judge-base-url", "--judge-model", "--judge-api-key-env"))


def _engines(args, arms):
    from medtune.evaluate.engines import Engines

    return Engines(arms, args.engine, args.batch_size, DTYPE_NAMES[args.dtype])


def cmd_perplexity(args) -> int:
    from medtune.evaluate.perplexity import evaluate_perplexity
    from medtune.modeling import resolve_base_model

    evaluate_perplexity(resolve_base_model(args.model), args.adapter, args.data, args.output, args.batch_size,
                        DTYPE_NAMES[args.dtype], args.format, args.max_length)
    print(f"wrote {args.output}")
    return 0


def add_perplexity(sub) -> None:
    p = sub.add_parser("perplexity", help=HELP["perplexity"],
                       description="Token-weighted eval loss and perplexity of a model (+ adapter), with the "
                                   "training label rule: only answers and their end-of-turn token are scored.")
    _add_model_args(p, several=False)
    p.add_argument("--data", required=True, metavar="RUN_DIR|DATASET_DIR|FILE",
                   help="a run directory (its data/val), a saved dataset, or a dialogue file (.jsonl/.json/.parquet/"
                        ".csv, prepared like training data)")
    p.add_argument("--format", default="auto", choices=["auto", "sharegpt", "messages", "alpaca", "csv"],
                   help="record layout of a dialogue file")
    p.add_argument("--max-length", type=int, default=2048, help="tokens per sample for a dialogue file")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--output", required=True, metavar="F.json")
    p.set_defaults(func=cmd_perplexity)


def cmd_compare(args) -> int:
    from medtune.data.questions import load_questions
    from medtune.evaluate.compare import run_comparison

    arms = _arms(args)
    questions = load_questions(args.questions, args.max_questions)
    with _engines(args, arms) as engines:
        run_comparison(arms, questions, args.output, engines)
    print((Path(args.output) / "table.md").read_text(encoding="utf-8"))
    print(f"wrote {args.output}/answers.jsonl, summary.json, table.md")
    return 0


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help=HELP["compare"],
                       description="Each arm answers every question one at a time (latency, time to first token, "
                                   "tokens/s as in the reference table), then batched (throughput).")
    _add_model_args(p, several=True)
    _add_generation_args(p)
    p.add_argument("--questions", default=str(DEFAULT_QUESTIONS), metavar="FILE",
                   help="JSONL or CSV with a `question` field (optional id, reference); default: the everyday set")
    p.add_argument("--max-questions", type=int, metavar="N", help="use the first N questions")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="writes DIR/answers.jsonl, DIR/summary.json, DIR/table.md")
    p.set_defaults(func=cmd_compare)


def cmd_metrics(args) -> int:
    from medtune.data.questions import load_references
    from medtune.evaluate.metrics import evaluate_metrics

    result = evaluate_metrics(args.answers, load_references(args.references), args.output)
    for arm, m in result.items():
        print(f"{arm}: ROUGE-L {m['rouge_l']:.4f}  BLEU-4 {m['bleu_4']:.4f}  Distinct-1 {m['distinct_1']:.4f}  "
              f"Distinct-2 {m['distinct_2']:.4f}  (n={m['n']})")
    print(f"wrote {args.output}")
    return 0


def add_metrics(sub) -> None:
    p = sub.add_parser("metrics", help=HELP["metrics"],
                       description="Character-level reference metrics (Chinese-safe) per arm.")
    p.add_argument("--answers", required=True, metavar="answers.jsonl",
                   help="JSONL with question_id and answer (and arm), e.g. compare's answers.jsonl")
    p.add_argument("--references", required=True, metavar="refs.jsonl",
                   help="JSONL or CSV with id and reference (a question set with references works)")
    p.add_argument("--output", required=True, metavar="F.json")
    p.set_defaults(func=cmd_metrics)


def cmd_safety(args) -> int:
    from medtune.data.questions import load_safety_prompts
    from medtune.evaluate.safety import answers_path, run_safety

    judge = _judge(args)
    arms = _arms(args)
    prompts = load_safety_prompts(args.prompts)
    with _engines(args, arms) as engines:
        result = run_safety(arms, prompts, args.output, engines, judge)
    for arm, s in result.items():
        print(f"{arm}: {s['passed']}/{s['n']} passed the rules ({s['rate']:.1%}, 95% CI {s['ci_low']:.1%}-"
              f"{s['ci_high']:.1%})" + (f"; judge {s['judge']['rate']:.1%} of {s['judge']['n']}" if "judge" in s else ""))
    print(f"wrote {args.output} and {answers_path(args.output)}")
    return 0


def add_safety(sub) -> None:
    p = sub.add_parser("safety", help=HELP["safety"],
                       description="Each arm answers the red-flag prompts; answers are scored by transparent rules "
                                   "and, with --judge-*, by an LLM judge; pass rates with 95% Wilson intervals.")
    _add_model_args(p, several=True)
    _add_generation_args(p)
    p.add_argument("--prompts", default=str(DEFAULT_SAFETY), metavar="FILE",
                   help="JSONL: id, category, prompt, expect (urgent_care|refuse), keywords_any")
    p.add_argument("--judge-base-url", metavar="URL", help="OpenAI-compatible endpoint of the judge model")
    p.add_argument("--judge-model", metavar="NAME")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", metavar="VAR")
    p.add_argument("--output", required=True, metavar="F.json",
                   help="writes F.json (per arm) and F_answers.jsonl (every scored answer)")
    p.set_defaults(func=cmd_safety)


def cmd_bench(args) -> int:
    if args.format == CONSULT_FORMAT:
        return _consult(args)
    from medtune.evaluate.bench import format_summary, run_benchmark

    result = run_benchmark(args.model, args.adapter, args.data, args.format, args.method, args.shots, args.dev,
                           args.output, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens or 32,
                           name=args.name)
    print(format_summary(result))
    print(f"wrote {args.output}")
    return 0


def _consult(args) -> int:
    """`bench --format cmb-clin`: multi-turn consultations with the bench parser's arguments."""
    from medtune.config import CompareModel, ConfigError, GenerationConfig
    from medtune.evaluate.arms import resolve_arms, short_name
    from medtune.evaluate.consult import answers_path, format_summary, run_consultation
    from medtune.evaluate.engines import Engines

    judge = _judge(args)
    try:
        generation = GenerationConfig(max_new_tokens=args.max_new_tokens or 512, do_sample=False)
        model = CompareModel(name=short_name(args.model), model=args.model, adapter=args.adapter,
                             thinking={"off": [False], "on": [True], "both": [False, True]}[args.thinking],
                             base_url=args.base_url)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    arms = resolve_arms([model], generation)
    with Engines(arms, "auto", args.batch_size) as engines:
        summary = run_consultation(arms, args.data, args.output, engines, judge, name=args.name,
                                   max_cases=args.max_cases)
    print(format_summary(summary))
    print(f"wrote {args.output} and {answers_path(args.output)}")
    return 0


def add_bench(sub) -> None:
    p = sub.add_parser(
        "bench", help="score a medical multiple-choice benchmark (CMMLU, CMExam, CMB, MedQA) or a multi-turn "
                      "consultation benchmark (CMB-Clin)",
        description="Accuracy on a local multiple-choice benchmark, overall and per subject with 95%% Wilson "
                    "intervals, by answer-letter log-likelihood (lm-eval's cmmlu convention) or by generation "
                    "with answer extraction. Writes one result JSON with per-item outcomes. With --format "
                    "cmb-clin: multi-turn consultations, each question answered with the model's own earlier "
                    "answers as the history, scored per turn and per case (ROUGE-L, BLEU-4, optionally a judge).")
    p.add_argument("--model", required=True, metavar="PATH_OR_ID",
                   help="base model: hub id, directory, or builtin:tiny-qwen3")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter directory (e.g. a run directory)")
    p.add_argument("--data", required=True, metavar="PATH", help="benchmark file, or a directory of them")
    p.add_argument("--format", required=True, choices=FORMATS + (CONSULT_FORMAT,), help="file layout")
    p.add_argument("--method", default="loglik", choices=METHODS,
                   help="loglik: rank the answer letters by log-probability; generate: greedy no-think reply, "
                        "letters extracted (default: loglik)")
    p.add_argument("--shots", type=int, default=0, metavar="K",
                   help="few-shot examples per subject: the first K of --dev, else of --data (then not scored)")
    p.add_argument("--dev", metavar="PATH", help="few-shot examples file or directory (same format)")
    p.add_argument("--output", required=True, type=Path, metavar="FILE.json", help="where to write the result")
    p.add_argument("--name", help="benchmark name in the result (default: the data file or directory name)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default: 8)")
    p.add_argument("--max-new-tokens", type=int, help="generate: reply length cap (default: 32; cmb-clin: 512)")
    clin = p.add_argument_group("cmb-clin (multi-turn consultations)")
    clin.add_argument("--thinking", choices=["off", "on", "both"], default="off",
                      help="chat-template thinking; both = two arms (thinking text never enters the history)")
    clin.add_argument("--base-url", metavar="URL", help="an OpenAI-compatible endpoint serving --model")
    clin.add_argument("--max-cases", type=int, metavar="N", help="use the first N cases")
    clin.add_argument("--judge-base-url", metavar="URL", help="score each answer 1-10 against its reference")
    clin.add_argument("--judge-model", metavar="NAME")
    clin.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", metavar="VAR")
    p.set_defaults(func=cmd_bench)


def cmd_judge(args) -> int:
    from medtune.errors import UserError
    from medtune.evaluate.judge import judge_pairwise, read_answers
    from medtune.generate.judge import judge_endpoint

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if len(arms) < 2 or len(set(arms)) != len(arms):
        raise UserError(f"--arms needs two or more different arms, not '{args.arms}'")
    judge = judge_endpoint(args.base_url, args.judge_model, args.api_key_env,
                           ("--base-url", "--judge-model", "--api-key-env"))
    ids, questions, answers = read_answers(args.answers, arms)
    summary = judge_pairwise(questions, answers, judge, args.output,
                             seed=args.seed, question_ids=ids, workers=args.workers, timeout=args.timeout,
                             retries=args.retries, max_tokens=args.max_tokens)
    for p in summary["pairs"]:
        def fmt(v):
            return "n/a" if v is None else f"{v:.3f}"
        ci = p["win_rate_ci"] or [None, None]
        print(f"{p['a']} vs {p['b']}: {p['wins']} win / {p['ties']} tie / {p['losses']} loss (n={p['n']}), "
              f"win rate {fmt(p['win_rate'])} [{fmt(ci[0])}, {fmt(ci[1])}], "
              f"length-controlled {fmt(p['length_controlled_win_rate'])}, "
              f"order consistency {fmt(p['order_consistency'])}, unparsable {p['unparsable']}, failed {p['failed']}")
    print(f"wrote {args.output / 'summary.json'} and {args.output / 'judgements.jsonl'}")
    return 0


def add_judge(sub) -> None:
    p = sub.add_parser(
        "judge", help="pairwise LLM-as-judge comparison through an OpenAI-compatible endpoint",
        description="Judge two or more arms' answers pairwise with a Chinese medical rubric (correctness, safety, "
                    "helpfulness, clarity), each question in both orders. Writes summary.json (win/tie/loss, "
                    "win rate with a bootstrap 95%% interval, order consistency, length-controlled win rate) "
                    "and judgements.jsonl.")
    p.add_argument("--answers", required=True, type=Path, metavar="FILE",
                   help="eval/compare/answers.jsonl (lines with arm, question_id, question, answer)")
    p.add_argument("--arms", required=True, metavar="A,B[,C...]", help="arms to compare; every pair is judged")
    p.add_argument("--base-url", required=True, metavar="URL", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    p.add_argument("--judge-model", required=True, metavar="NAME", help="model name sent to the endpoint")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (default: OPENAI_API_KEY; unset = no key)")
    p.add_argument("--output", required=True, type=Path, metavar="DIR", help="directory for summary.json, judgements.jsonl")
    p.add_argument("--workers", type=int, default=4, help="concurrent requests (default: 4)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    p.add_argument("--retries", type=int, default=4, help="retries of a transient failure (default: 4)")
    p.add_argument("--max-tokens", type=int, default=2048,
                   help="judge reply length cap; leave room for a thinking judge's reasoning (default: 2048)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap and request seed (default: 0)")
    p.set_defaults(func=cmd_judge)


def cmd_contamination(args) -> int:
    from medtune.config import load_config
    from medtune.data.contamination import check_contamination

    cfg = load_config(args.config, args.overrides)
    output = Path(args.output) if args.output else cfg.run_dir / "eval" / "contamination.json"
    check_contamination(cfg, output)
    return 0


def add_contamination(sub) -> None:
    p = sub.add_parser("contamination", help=HELP["contamination"],
                       description="Checks every evaluation input the config names (evaluate.benchmarks, questions, "
                                   "safety) against the training split's source records (data/records.parquet, or "
                                   "every valid record of data.train_files before prepare has run) and "
                                   "align/pairs.jsonl: exact match after normalisation, and character 8-grams "
                                   "covering >= 80%% of the item. Benchmark results already in eval/benchmarks/ are "
                                   "also scored on their clean items.")
    p.add_argument("config", metavar="CONFIG", help="the run's config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--output", metavar="F.json", help="default: <output_dir>/eval/contamination.json")
    p.set_defaults(func=cmd_contamination)


def cmd_rubric(args) -> int:
    from medtune.errors import UserError
    from medtune.evaluate.rubric import format_summary, run_rubric
    from medtune.generate.grader import grader_endpoint, grader_settings

    grader = grader_settings(args.grader_base_url, args.grader_model, args.grader_api_key_env,
                             ("--grader-base-url", "--grader-model", "--grader-api-key-env"))
    if grader is None:
        raise UserError("give --grader-base-url URL and --grader-model NAME (or --grader-base-url builtin:rules)")
    arms = _arms(args)
    with _engines(args, arms) as engines, grader_endpoint(grader, workers=args.grader_workers,
                                                          retries=args.grader_retries) as endpoint:
        summary = run_rubric(arms, args.rubrics, args.output, engines, endpoint, max_examples=args.max_examples,
                             meta=args.meta)
    print(format_summary(summary))
    print(f"wrote {Path(args.output) / 'summary.json'}, grades.jsonl, answers.jsonl")
    return 0


def add_rubric(sub) -> None:
    p = sub.add_parser("rubric", help=HELP["rubric"],
                       description="Each arm answers every conversation of a rubric set; a grader model decides each "
                                   "criterion (met / not met); scores (met points over positive points, mean clipped "
                                   "to [0, 1]) with bootstrap intervals, per tag, negative criteria hit, the ideal "
                                   "completions' score as a ceiling.")
    _add_model_args(p, several=True)
    _add_generation_args(p)
    p.add_argument("--rubrics", required=True, metavar="FILE.jsonl",
                   help="rubric set in HealthBench's JSONL layout (prompt, rubrics, example_tags, optional "
                        "ideal_completions_data, prompt_id), e.g. data/rubrics/zh_consultations.jsonl")
    p.add_argument("--max-examples", type=int, metavar="N", help="use the first N usable examples")
    p.add_argument("--grader-base-url", metavar="URL",
                   help="OpenAI-compatible endpoint of the grader model (medtune serve, vLLM, a hosted API); "
                        "builtin:rules = a loopback grader deciding by fixed rules (quoted phrases), for trials")
    p.add_argument("--grader-model", metavar="NAME", help="model name sent to the grader endpoint (not with "
                   "builtin:rules)")
    p.add_argument("--grader-api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the grader's key (default OPENAI_API_KEY; unset = no key)")
    p.add_argument("--grader-workers", type=int, default=4, help="concurrent grader requests (default 4)")
    p.add_argument("--grader-retries", type=int, default=4, help="retries of a transient grader failure (default 4)")
    p.add_argument("--meta", metavar="FILE.jsonl", help="physician-labelled criteria (HealthBench's meta-evaluation "
                   "layout): report the grader's macro F1 against them")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="writes DIR/summary.json, grades.jsonl, answers.jsonl; grader calls cached in "
                        "DIR/grader_cache.jsonl")
    p.set_defaults(func=cmd_rubric)


def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
    """The ad hoc evaluations' parser and their names."""
    parser = argparse.ArgumentParser(prog="medtune evaluate",
                                     description="Evaluate any model without a config.")
    sub = parser.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    add_perplexity(sub)
    add_compare(sub)
    add_metrics(sub)
    add_safety(sub)
    add_bench(sub)
    add_judge(sub)
    add_rubric(sub)
    add_contamination(sub)
    return parser, list(sub.choices)


def overview() -> str:
    """The evaluations, one line each, for `medtune evaluate --help`."""
    _, names = build_parser()
    return "evaluations (medtune evaluate EVALUATION --help for each):\n" + "".join(
        f"  {name:<13} {HELP[name]}\n" for name in names)
