"""The evaluate stage: what the config's `evaluate:` section asks for, on the run directory, into eval/.

Run as: medtune evaluate CONFIG.yaml [--set evaluate.max_questions=5] [--force]

In order, each part skipped when eval/manifest.json records the fingerprint of its inputs and its
outputs exist (`--force` reruns them all):
- perplexity: the tuned adapter (and its base) on data/val -> eval/perplexity.json
- comparison: every arm on the question set -> eval/compare/{answers.jsonl, summary.json, table.md}
- reference metrics: the comparison's answers against the references -> eval/metrics.json
- safety probe: every arm on the red-flag prompts -> eval/safety.json, eval/safety_answers.jsonl
- benchmarks: every local model of the comparison on each configured benchmark -> eval/benchmarks/*.json,
  and paired McNemar tests between them -> eval/benchmarks/significance.json
- consultations: every chat-template arm through each multi-turn case set, with its own earlier answers as the
  history -> eval/consultations/<name>.json, <name>_answers.jsonl (judge-scored when a judge is set)
- LLM-as-judge, when evaluate.judge_base_url and judge_model are set: the first arm against each other
  arm on the comparison's answers -> eval/judge/{summary.json, judgements.jsonl}
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from medtune import __version__
from medtune.assets import sha256_file
from medtune.config import Config
from medtune.errors import UserError
from medtune.evaluate.arms import Arm, default_models, resolve_arms
from medtune.evaluate.inputs import load_questions, load_references, load_safety_prompts
from medtune.modeling import resolve_base_model
from medtune.rundir import fingerprint, read_json, write_json

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def file_identity(path: str | Path) -> dict:
    path = Path(path).resolve()
    return {"path": str(path), "sha256": sha256_file(path)}


def model_identity(name_or_path: str) -> dict:
    """A local model by its files' sizes and times (hashing 16 GB of weights takes minutes), a hub id by name."""
    path = Path(name_or_path)
    if not path.is_dir():
        return {"hub": name_or_path}
    return {"path": str(path.resolve()), "files": {
        f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir())
        if f.suffix in (".safetensors", ".bin") or f.name == "config.json"}}


def data_identity(path: str | Path) -> dict:
    """A benchmark file by its hash; a directory of them by every file's hash."""
    path = Path(path)
    if path.is_dir():
        return {"dir": str(path.resolve()), "files": {f.name: sha256_file(f.resolve()) for f in sorted(path.iterdir())
                                                      if f.is_file()}}
    return file_identity(path)


def arm_identity(arm: Arm) -> dict:
    return {**arm.describe(), "model": model_identity(arm.model) if not arm.base_url else arm.model,
            "adapter": [file_identity(Path(arm.adapter) / f) for f in ADAPTER_FILES
                        if (Path(arm.adapter) / f).exists()] if arm.adapter else None}


def evaluate_run(cfg: Config, force: bool = False, log=print) -> dict:
    """Run the evaluate stage; returns {part: output path} of what exists under eval/ afterwards."""
    from medtune.evaluate.engines import Engines

    ev, run_dir = cfg.evaluate, cfg.run_dir
    eval_dir = run_dir / "eval"
    manifest_path = eval_dir / "manifest.json"
    parts: dict[str, str] = (read_json(manifest_path) or {}).get("parts", {})
    started = time.perf_counter()

    run_base = resolve_base_model(cfg.model.name_or_path, run_dir)
    models = ev.compare or default_models(cfg.model.name_or_path, cfg.data.system_prompt)
    arms = resolve_arms(models, ev.generation, run_dir, run_base)
    outputs: dict[str, Path] = {}

    def up_to_date(part: str, fp: str, *paths: Path) -> bool:
        if not force and parts.get(part) == fp and all(p.exists() for p in paths):
            log(f"evaluate: {part} is up to date (fingerprint {fp}); skipping (--force reruns it)")
            return True
        return False

    def done(part: str, fp: str) -> None:  # recorded part by part: an interrupted stage keeps what finished
        parts[part] = fp
        write_json(manifest_path, {"parts": parts, "medtune_version": __version__})

    with Engines(arms, ev.engine, ev.batch_size, cfg.model.torch_dtype) as engines:
        # -- perplexity of the tuned adapter on the validation split --
        val_samples = (read_json(run_dir / "data" / "stats.json") or {}).get("val", 0)
        if ev.perplexity and not val_samples:
            log("evaluate: no validation samples in data/ (data.val_size is 0, or prepare has not run): perplexity "
                "skipped")
        elif ev.perplexity:
            if not (run_dir / ADAPTER_FILES[0]).is_file():
                raise UserError(f"{run_dir} holds no trained adapter ({ADAPTER_FILES[0]}): run `medtune train "
                                "CONFIG` first, or set evaluate.perplexity: false")
            out = eval_dir / "perplexity.json"
            fp = fingerprint({"part": "perplexity", "model": model_identity(run_base),
                              "adapter": [file_identity(run_dir / f) for f in ADAPTER_FILES],
                              "data": (read_json(run_dir / "data" / "manifest.json") or {}).get("fingerprint"),
                              "dtype": cfg.model.torch_dtype})
            if not up_to_date("perplexity", fp, out):
                from medtune.evaluate.perplexity import evaluate_perplexity

                evaluate_perplexity(run_base, str(run_dir), run_dir, out, cfg.train.per_device_eval_batch_size,
                                    cfg.model.torch_dtype, with_base=True, log=log)
                done("perplexity", fp)
            outputs["perplexity"] = out

        # -- the comparison, and the reference metrics on its answers --
        arm_ids = [arm_identity(a) for a in arms]
        if ev.questions:
            questions = load_questions(ev.questions, ev.max_questions)
            compare_dir = eval_dir / "compare"
            answers = compare_dir / "answers.jsonl"
            fp = fingerprint({"part": "compare", "arms": arm_ids, "questions": file_identity(ev.questions),
                              "max_questions": ev.max_questions, "engine": ev.engine, "batch_size": ev.batch_size,
                              "dtype": cfg.model.torch_dtype})
            if not up_to_date("compare", fp, answers, compare_dir / "summary.json", compare_dir / "table.md"):
                from medtune.evaluate.compare import run_comparison

                run_comparison(arms, questions, compare_dir, engines, log=log)
                done("compare", fp)
            outputs["compare"] = compare_dir

            references = (load_references(ev.references) if ev.references
                          else {q.id: q.reference for q in questions if q.reference})
            metrics = eval_dir / "metrics.json"
            if not references:
                log(f"evaluate: {ev.questions} has no `reference` answers and evaluate.references is not set: "
                    "reference metrics skipped")
            else:
                fp = fingerprint({"part": "metrics", "answers": file_identity(answers), "references": references})
                if not up_to_date("metrics", fp, metrics):
                    from medtune.evaluate.metrics import evaluate_metrics

                    evaluate_metrics(answers, references, metrics)
                    done("metrics", fp)
                outputs["metrics"] = metrics

        # -- the safety probe, every arm --
        if ev.safety:
            prompts = load_safety_prompts(ev.safety)
            safety = eval_dir / "safety.json"
            judge = None
            if ev.judge_base_url and ev.judge_model:
                judge = (ev.judge_base_url, ev.judge_model, os.environ.get(ev.judge_api_key_env))
            fp = fingerprint({"part": "safety", "arms": arm_ids, "prompts": file_identity(ev.safety),
                              "judge": judge[:2] if judge else None, "batch_size": ev.batch_size})
            from medtune.evaluate.safety import answers_path, run_safety

            if not up_to_date("safety", fp, safety, answers_path(safety)):
                run_safety(arms, prompts, safety, engines, judge, log=log)
                done("safety", fp)
            outputs["safety"] = safety

        # -- multiple-choice benchmarks: every local model of the comparison (thinking does not apply) --
        if ev.benchmarks:
            from medtune.evaluate.bench import run_benchmark, significance

            bench_dir = eval_dir / "benchmarks"
            local = {(a.model, a.adapter): a.name.split("/")[0] for a in arms if not a.base_url}
            results = []
            for b in ev.benchmarks:
                bench_name = b.name or Path(b.path.rstrip("/")).stem
                for (model, adapter), label in local.items():
                    out = bench_dir / f"{bench_name}-{b.method}-{b.shots}shot--{label}.json"
                    fp = fingerprint({"part": "bench", "model": model_identity(model), "adapter": [
                        file_identity(Path(adapter) / f) for f in ADAPTER_FILES] if adapter else None,
                        "data": data_identity(b.path), "dev": data_identity(b.dev_path) if b.dev_path else None,
                        "format": b.format, "method": b.method, "shots": b.shots, "batch_size": ev.batch_size,
                        "kind": b.kind, "subjects": b.subjects})
                    if not up_to_date(f"bench:{out.name}", fp, out):
                        log(f"evaluate: benchmark {bench_name} ({b.format}, {b.method}, {b.shots}-shot) on {label}")
                        run_benchmark(model, adapter, b.path, b.format, b.method, b.shots, b.dev_path, out,
                                      ev.batch_size, name=bench_name, arm=label, kind=b.kind, subjects=b.subjects)
                        done(f"bench:{out.name}", fp)
                    results.append(read_json(out))
            write_json(bench_dir / "significance.json", significance(results))
            outputs["benchmarks"] = bench_dir

        # -- multi-turn consultations: every chat-template arm, its own answers as the history --
        if ev.consultations:
            from medtune.evaluate.consult import answers_path, run_consultation

            consult_dir = eval_dir / "consultations"
            judge = (ev.judge_base_url, ev.judge_model, os.environ.get(ev.judge_api_key_env)) \
                if ev.judge_base_url and ev.judge_model else None
            for c in ev.consultations:
                name = Path(c.path).stem
                out = consult_dir / f"{name}.json"
                fp = fingerprint({"part": "consult", "arms": arm_ids, "data": file_identity(c.path),
                                  "max_cases": c.max_cases, "judge": judge[:2] if judge else None,
                                  "engine": ev.engine, "batch_size": ev.batch_size, "dtype": cfg.model.torch_dtype})
                if not up_to_date(f"consult:{name}", fp, out, answers_path(out)):
                    run_consultation(arms, c.path, out, engines, judge, name=name, max_cases=c.max_cases, log=log)
                    done(f"consult:{name}", fp)
            outputs["consultations"] = consult_dir

        # -- LLM-as-judge on the comparison's answers: the first arm against each of the others --
        if ev.judge_base_url and ev.judge_model and "compare" in outputs and len(arms) > 1:
            from medtune.evaluate.judge import judge_pairwise

            judge_dir = eval_dir / "judge"
            answers_file = eval_dir / "compare" / "answers.jsonl"
            fp = fingerprint({"part": "judge", "answers": file_identity(answers_file), "url": ev.judge_base_url,
                              "model": ev.judge_model})
            if not up_to_date("judge", fp, judge_dir / "summary.json"):
                from medtune.evaluate.judge import read_answers

                ids, texts, answers = read_answers(answers_file, [a.name for a in arms])
                judge_pairwise(texts, answers, ev.judge_base_url, ev.judge_model,
                               os.environ.get(ev.judge_api_key_env), judge_dir,
                               pairs=[(arms[0].name, a.name) for a in arms[1:]], question_ids=ids)
                done("judge", fp)
            outputs["judge"] = judge_dir

    log(f"evaluate: done in {time.perf_counter() - started:.1f} s; results in {eval_dir}/: "
        + ", ".join(str(p.relative_to(eval_dir)) for p in outputs.values()))
    table = eval_dir / "compare" / "table.md"
    if "compare" in outputs:
        log("\n" + table.read_text(encoding="utf-8"))
    return outputs
