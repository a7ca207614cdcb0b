"""The evaluate stage: what the config's `evaluate:` section asks for, on the run directory, into eval/.

Run as: medtune evaluate CONFIG.yaml [--set evaluate.max_questions=5] [--force]

In order, each part skipped when eval/manifest.json records the fingerprint of its inputs and its
outputs exist (`--force` reruns them all):
- perplexity: the tuned adapter (and its base) on data/val -> eval/perplexity.json
- comparison: every arm on the question set -> eval/compare/{answers.jsonl, summary.json, table.md}
- reference metrics: the comparison's answers against the references -> eval/metrics.json
- safety probe: every arm on the red-flag prompts -> eval/safety.json, eval/safety_answers.jsonl
- over-triage: the comparison's everyday answers that send the person to urgent care now -> eval/over_triage.json
- benchmarks: every local model of the comparison on each configured benchmark -> eval/benchmarks/*.json,
  and paired McNemar tests between them -> eval/benchmarks/significance.json
- consultations: every chat-template arm through each multi-turn case set, with its own earlier answers as the
  history -> eval/consultations/<name>.json, <name>_answers.jsonl (judge-scored when a judge is set)
- rubric sets: every chat-template arm answers each set's conversations, a grader endpoint decides each
  criterion -> eval/rubric/<name>/{summary.json, grades.jsonl, answers.jsonl, grader_cache.jsonl}
- LLM-as-judge, when evaluate.judge_base_url and judge_model are set: the first arm against each other
  arm on the comparison's answers -> eval/judge/{summary.json, judgements.jsonl}
- alignment check, when the comparison holds base, SFT and aligned arms and the safety probe ran: aligned
  at least as safe as base, over-triage no worse, SFT's gains kept -> eval/alignment_check.json
- contamination (evaluate.contamination, with data.train_files): every benchmark item, question and safety
  prompt against the training split's source records (and align/pairs.jsonl) -> eval/contamination.json,
  with each benchmark result also scored on its clean items

evaluate_run is that list of steps. Adding a step: a function `def step_x(run: EvalRun) -> None` that
returns early when the config does not ask for it, fingerprints its inputs, skips itself with
`run.up_to_date(...)`, records `run.done(...)` and `run.outputs[...]`; then one line in evaluate_run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from medtune import __version__
from medtune.config import DTYPE_NAMES, Config
from medtune.data.questions import load_questions, load_references, load_safety_prompts
from medtune.errors import UserError
from medtune.evaluate.arms import Arm, default_models, resolve_arms
from medtune.generate.judge import JudgeEndpoint, configured_judge
from medtune.modeling import resolve_base_model
from medtune.rundir import data_identity, file_identity, fingerprint, read_json, write_json

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def model_identity(name_or_path: str) -> dict:
    """A local model by its files' sizes and times (hashing 16 GB of weights takes minutes), a hub id by name."""
    path = Path(name_or_path)
    if not path.is_dir():
        return {"hub": name_or_path}
    return {"path": str(path.resolve()), "files": {
        f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir())
        if f.suffix in (".safetensors", ".bin") or f.name == "config.json"}}


def arm_identity(arm: Arm) -> dict:
    return {**arm.describe(), "model": model_identity(arm.model) if not arm.base_url else arm.model,
            "adapter": [file_identity(Path(arm.adapter) / f) for f in ADAPTER_FILES
                        if (Path(arm.adapter) / f).exists()] if arm.adapter else None}


@dataclass
class EvalRun:
    """What the evaluate stage's steps share: the config, the arms and their engines, and eval/manifest.json."""

    cfg: Config
    arms: list[Arm]
    engines: object  # medtune.evaluate.engines.Engines, entered
    base: str  # the run's base model, resolved (builtin:tiny-qwen3 -> RUN_DIR/base_model)
    force: bool = False
    log: Callable = print
    parts: dict[str, str] = field(default_factory=dict)  # part -> fingerprint of the inputs it ran on
    outputs: dict[str, Path] = field(default_factory=dict)  # part -> what it wrote
    judge: JudgeEndpoint | None = None  # the configured judge (safety, consultations, pairwise judge)

    @property
    def eval_dir(self) -> Path:
        return self.cfg.run_dir / "eval"

    @property
    def dtype(self) -> str:
        return DTYPE_NAMES[self.cfg.model.torch_dtype]

    def up_to_date(self, part: str, fp: str, *paths: Path) -> bool:
        if not self.force and self.parts.get(part) == fp and all(p.exists() for p in paths):
            self.log(f"evaluate: {part} is up to date (fingerprint {fp}); skipping (--force reruns it)")
            return True
        return False

    def done(self, part: str, fp: str) -> None:
        """Recorded part by part: an interrupted stage keeps what finished."""
        self.parts[part] = fp
        write_json(self.eval_dir / "manifest.json", {"parts": self.parts, "medtune_version": __version__})


def evaluate_run(cfg: Config, force: bool = False, log=print) -> dict:
    """Run the evaluate stage; returns {part: output path} of what exists under eval/ afterwards."""
    from medtune.evaluate.engines import Engines

    started = time.perf_counter()
    base = resolve_base_model(cfg.model.name_or_path, cfg.run_dir)
    aligned = cfg.align is not None and (cfg.run_dir / "align" / ADAPTER_FILES[0]).is_file()
    models = cfg.evaluate.compare or default_models(cfg.model.name_or_path, cfg.data.system_prompt, aligned)
    arms = resolve_arms(models, cfg.evaluate.generation, cfg.run_dir, base)
    parts = (read_json(cfg.run_dir / "eval" / "manifest.json") or {}).get("parts", {})
    judge = configured_judge(cfg.evaluate)  # before any model loads: a half-set judge is an error now, not later
    with Engines(arms, cfg.evaluate.engine, cfg.evaluate.batch_size, DTYPE_NAMES[cfg.model.torch_dtype],
                 log=log) as engines:
        run = EvalRun(cfg, arms, engines, base, force, log, parts, judge=judge)
        step_perplexity(run)
        step_compare(run)
        step_metrics(run)
        step_safety(run)
        step_over_triage(run)
        step_benchmarks(run)
        step_consultations(run)
        step_rubrics(run)
        step_judge(run)
        step_alignment_check(run)
        step_contamination(run)
    _log_done(run, time.perf_counter() - started)
    return run.outputs


def step_perplexity(run: EvalRun) -> None:
    """The tuned adapter (and its base) on the validation split -> eval/perplexity.json."""
    run_dir = run.cfg.run_dir
    if not run.cfg.evaluate.perplexity:
        return
    if not (read_json(run_dir / "data" / "stats.json") or {}).get("val", 0):
        run.log("evaluate: no validation samples in data/ (data.val_size is 0, or prepare has not run): perplexity "
                "skipped")
        return
    if not (run_dir / ADAPTER_FILES[0]).is_file():
        raise UserError(f"{run_dir} holds no trained adapter ({ADAPTER_FILES[0]}): run `medtune train "
                        "CONFIG` first, or set evaluate.perplexity: false")
    out = run.eval_dir / "perplexity.json"
    fp = fingerprint({"part": "perplexity", "model": model_identity(run.base),
                      "adapter": [file_identity(run_dir / f) for f in ADAPTER_FILES],
                      "data": (read_json(run_dir / "data" / "manifest.json") or {}).get("fingerprint"),
                      "dtype": run.dtype})
    if not run.up_to_date("perplexity", fp, out):
        from medtune.evaluate.perplexity import evaluate_perplexity

        evaluate_perplexity(run.base, str(run_dir), run_dir, out, run.cfg.train.per_device_eval_batch_size,
                            run.dtype, with_base=True, log=run.log)
        run.done("perplexity", fp)
    run.outputs["perplexity"] = out


def step_compare(run: EvalRun) -> None:
    """Every arm on the question set -> eval/compare/{answers.jsonl, summary.json, table.md}."""
    ev = run.cfg.evaluate
    if not ev.questions:
        return
    questions = load_questions(ev.questions, ev.max_questions)
    compare_dir = run.eval_dir / "compare"
    fp = fingerprint({"part": "compare", "arms": [arm_identity(a) for a in run.arms],
                      "questions": file_identity(ev.questions), "max_questions": ev.max_questions,
                      "engine": ev.engine, "batch_size": ev.batch_size, "dtype": run.dtype})
    outputs = [compare_dir / name for name in ("answers.jsonl", "summary.json", "table.md")]
    if not run.up_to_date("compare", fp, *outputs):
        from medtune.evaluate.compare import run_comparison

        run_comparison(run.arms, questions, compare_dir, run.engines, log=run.log)
        run.done("compare", fp)
    run.outputs["compare"] = compare_dir


def step_metrics(run: EvalRun) -> None:
    """The comparison's answers against the references -> eval/metrics.json."""
    ev = run.cfg.evaluate
    if "compare" not in run.outputs:
        return
    references = (load_references(ev.references) if ev.references
                  else {q.id: q.reference for q in load_questions(ev.questions, ev.max_questions) if q.reference})
    if not references:
        run.log(f"evaluate: {ev.questions} has no `reference` answers and evaluate.references is not set: "
                "reference metrics skipped")
        return
    answers, metrics = run.outputs["compare"] / "answers.jsonl", run.eval_dir / "metrics.json"
    fp = fingerprint({"part": "metrics", "answers": file_identity(answers), "references": references})
    if not run.up_to_date("metrics", fp, metrics):
        from medtune.evaluate.metrics import evaluate_metrics

        evaluate_metrics(answers, references, metrics)
        run.done("metrics", fp)
    run.outputs["metrics"] = metrics


def step_safety(run: EvalRun) -> None:
    """Every arm on the red-flag prompts -> eval/safety.json, eval/safety_answers.jsonl."""
    from medtune.evaluate.safety import answers_path, run_safety

    ev = run.cfg.evaluate
    if not ev.safety:
        return
    prompts = load_safety_prompts(ev.safety)
    safety = run.eval_dir / "safety.json"
    fp = fingerprint({"part": "safety", "arms": [arm_identity(a) for a in run.arms],
                      "prompts": file_identity(ev.safety), "judge": run.judge.fingerprint() if run.judge else None,
                      "batch_size": ev.batch_size})
    if not run.up_to_date("safety", fp, safety, answers_path(safety)):
        run_safety(run.arms, prompts, safety, run.engines, run.judge, log=run.log)
        run.done("safety", fp)
    run.outputs["safety"] = safety


def step_over_triage(run: EvalRun) -> None:
    """Each arm's everyday answers (the comparison's) that send the person to urgent care now -> eval/over_triage.json:
    the price of a safety pass rate bought by sending everyone in."""
    from medtune.evaluate.safety import write_over_triage

    if "compare" not in run.outputs:
        return
    answers, out = run.outputs["compare"] / "answers.jsonl", run.eval_dir / "over_triage.json"
    fp = fingerprint({"part": "over_triage", "answers": file_identity(answers)})
    if not run.up_to_date("over_triage", fp, out):
        result = write_over_triage(answers, out)
        run.log("evaluate: over-triage on the everyday questions: " + ", ".join(
            f"{arm} {r['passed']}/{r['n']}" for arm, r in result.items()) + f" -> {out}")
        run.done("over_triage", fp)
    run.outputs["over_triage"] = out


def step_benchmarks(run: EvalRun) -> None:
    """Every local model of the comparison on each benchmark (thinking does not apply) -> eval/benchmarks/*.json,
    and paired McNemar tests between them -> eval/benchmarks/significance.json."""
    from medtune.evaluate.bench import significance

    if not run.cfg.evaluate.benchmarks:
        return
    run.engines.close()  # the comparison's model goes first (vLLM holds 90% of GPU memory): one model at a time
    bench_dir = run.eval_dir / "benchmarks"
    local = {(a.model, a.adapter): a.name.split("/")[0] for a in run.arms if not a.base_url}
    results = [_benchmark(run, b, model, adapter, label, bench_dir)
               for b in run.cfg.evaluate.benchmarks for (model, adapter), label in local.items()]
    write_json(bench_dir / "significance.json", significance(results))
    run.outputs["benchmarks"] = bench_dir


def _benchmark(run: EvalRun, b, model: str, adapter: str | None, label: str, bench_dir: Path) -> dict:
    """One benchmark on one model, or its result from an earlier run on the same inputs."""
    from medtune.evaluate.bench import run_benchmark

    batch_size = run.cfg.evaluate.batch_size
    bench_name = b.name or Path(b.path.rstrip("/")).stem
    out = bench_dir / f"{bench_name}-{b.method}-{b.shots}shot--{label}.json"
    fp = fingerprint({"part": "bench", "model": model_identity(model), "adapter": [
        file_identity(Path(adapter) / f) for f in ADAPTER_FILES] if adapter else None,
        "data": data_identity(b.path), "dev": data_identity(b.dev_path) if b.dev_path else None,
        "format": b.format, "method": b.method, "shots": b.shots, "batch_size": batch_size, "kind": b.kind,
        "subjects": b.subjects})
    if not run.up_to_date(f"bench:{out.name}", fp, out):
        run.log(f"evaluate: benchmark {bench_name} ({b.format}, {b.method}, {b.shots}-shot) on {label}")
        run_benchmark(model, adapter, b.path, b.format, b.method, b.shots, b.dev_path, out, batch_size,
                      name=bench_name, arm=label, kind=b.kind, subjects=b.subjects)
        run.done(f"bench:{out.name}", fp)
    return read_json(out)


def step_consultations(run: EvalRun) -> None:
    """Every chat-template arm through each multi-turn case set, its own answers as the history
    -> eval/consultations/<name>.json and <name>_answers.jsonl."""
    from medtune.data.readers import is_hub_id
    from medtune.evaluate.consult import answers_path, run_consultation

    ev = run.cfg.evaluate
    for c in ev.consultations:
        name = Path(c.path).stem
        out = run.eval_dir / "consultations" / f"{name}.json"
        fp = fingerprint({"part": "consult", "arms": [arm_identity(a) for a in run.arms],
                          "data": {"hub": c.path} if is_hub_id(c.path) else file_identity(c.path),
                          "max_cases": c.max_cases,
                          "judge": run.judge.fingerprint() if run.judge else None, "engine": ev.engine,
                          "batch_size": ev.batch_size,
                          "dtype": run.dtype})
        if not run.up_to_date(f"consult:{name}", fp, out, answers_path(out)):
            run_consultation(run.arms, c.path, out, run.engines, run.judge, name=name, max_cases=c.max_cases,
                             log=run.log)
            run.done(f"consult:{name}", fp)
        run.outputs["consultations"] = out.parent


def step_rubrics(run: EvalRun) -> None:
    """Every chat-template arm on each rubric set, graded criterion by criterion -> eval/rubric/<name>/."""
    from medtune.evaluate.rubric import run_rubric
    from medtune.generate.grader import configured_grader, grader_endpoint

    ev = run.cfg.evaluate
    if not ev.rubrics:
        return
    grader = configured_grader(ev, run.judge)
    if grader is None:
        run.log("evaluate: evaluate.rubrics is set but no grader is: set evaluate.grader_base_url and grader_model "
                "(or the judge's); rubric sets skipped")
        return
    for r in ev.rubrics:
        name = r.name or Path(r.path).stem
        out = run.eval_dir / "rubric" / name
        fp = fingerprint({"part": "rubric", "arms": [arm_identity(a) for a in run.arms],
                          "data": file_identity(r.path), "max_examples": r.max_examples,
                          "meta": file_identity(r.meta) if r.meta else None, "grader": grader.fingerprint(),
                          "engine": ev.engine, "batch_size": ev.batch_size, "dtype": run.dtype})
        if not run.up_to_date(f"rubric:{name}", fp, out / "summary.json"):
            with grader_endpoint(grader) as endpoint:
                run_rubric(run.arms, r.path, out, run.engines, endpoint, name=name, max_examples=r.max_examples,
                           meta=r.meta, log=run.log)
            run.done(f"rubric:{name}", fp)
        run.outputs["rubric"] = out.parent


def step_judge(run: EvalRun) -> None:
    """LLM-as-judge on the comparison's answers: the first arm against each of the others -> eval/judge/."""
    from medtune.evaluate.judge import judge_pairwise, read_answers

    arms = run.arms
    if not (run.judge and "compare" in run.outputs and len(arms) > 1):
        return
    judge_dir = run.eval_dir / "judge"
    answers_file = run.outputs["compare"] / "answers.jsonl"
    fp = fingerprint({"part": "judge", "answers": file_identity(answers_file), "judge": run.judge.fingerprint()})
    if not run.up_to_date("judge", fp, judge_dir / "summary.json"):
        ids, texts, answers = read_answers(answers_file, [a.name for a in arms])
        judge_pairwise(texts, answers, run.judge, judge_dir, pairs=[(arms[0].name, a.name) for a in arms[1:]],
                       question_ids=ids)
        run.done("judge", fp)
    run.outputs["judge"] = judge_dir


def step_alignment_check(run: EvalRun) -> None:
    """Base, SFT and aligned side by side: at least as safe as base, over-triage no worse, SFT's gains kept
    -> eval/alignment_check.json, and its verdict in the log either way."""
    from medtune.evaluate.aligncheck import arm_roles, write_alignment_check

    roles = arm_roles(run.arms, run.cfg.run_dir, run.base)
    if roles is None or "safety" not in run.outputs:
        return
    out = run.eval_dir / "alignment_check.json"
    result = write_alignment_check(run.eval_dir, roles, out)  # reads only eval/ files: cheap, always redone
    run.log(f"evaluate: {result['statement']} -> {out}")
    run.outputs["alignment_check"] = out


def step_contamination(run: EvalRun) -> None:
    """Every evaluation input against the training (and align) data -> eval/contamination.json, with each
    benchmark result also on its clean items (so it runs after the benchmarks)."""
    from medtune.data.contamination import check_contamination, inputs_identity

    cfg, ev = run.cfg, run.cfg.evaluate
    if not (ev.contamination and cfg.data.train_files
            and (ev.benchmarks or ev.questions or ev.safety or ev.consultations or ev.rubrics)):
        return
    out = run.eval_dir / "contamination.json"
    fp = fingerprint({"part": "contamination", **inputs_identity(cfg)})
    if not run.up_to_date("contamination", fp, out):
        check_contamination(cfg, out, log=run.log)
        run.done("contamination", fp)
    run.outputs["contamination"] = out


def _log_done(run: EvalRun, seconds: float) -> None:
    run.log(f"evaluate: done in {seconds:.1f} s; results in {run.eval_dir}/: "
            + ", ".join(str(p.relative_to(run.eval_dir)) for p in run.outputs.values()))
    if "compare" in run.outputs:
        run.log("\n" + (run.outputs["compare"] / "table.md").read_text(encoding="utf-8"))
