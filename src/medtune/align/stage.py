"""The align stage: DPO, KTO or GRPO with TRL on top of the SFT adapter, after train.

Run as: medtune align CONFIG.yaml [--set align.max_steps=20] [--force] [--resume CHECKPOINT]

The policy starts as the SFT model (base + the run's adapter, trainable) and the reference IS the SFT
model: the adapter is loaded as a PeftModel and TRL copies it into a frozen "ref" adapter. Passing only a
LoRA config would make the reference the raw base (FINDINGS.md, the most reported pitfall). Without a
finished train stage the stage starts from the base model with a new LoRA (reference = base), and says so.

Writes <output_dir>/align/ in the Trainer layout: adapter_model.safetensors, adapter_config.json, tokenizer
files, README.md, checkpoint-<step>/ (with completion markers), trainer_state.json, train_results.json,
metrics.jsonl, timeline.json, data_stats.json, rejected.jsonl, align_manifest.json, and for
`pairs: self` pairs.jsonl + pairs_summary.json. See docs/run-directory.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from pathlib import Path

from medtune import __version__
from medtune.config import Config
from medtune.data.readers import expand_inputs
from medtune.errors import UserError
from medtune.modeling import check_lora_targets, count_parameters, load_causal_lm, resolve_base_model, torch_dtype
from medtune.rundir import StageRun, fingerprint, read_json, sha256_file, write_json
from medtune.train.backends import Backends, align_backends, align_plan_config, choose_checkpointing
from medtune.train.common import (
    TRAINER_OUTPUTS,
    TRAINER_STRAYS,
    NonFiniteLoss,
    Timeline,
    choose_checkpoint,
    complete_checkpoints,
    lora_config,
    world_size,
)

ALIGN_FORMAT = 1  # bump when the same inputs would align differently
TESTED_TRL = "1.16.0"
"""The TRL version (pinned in pyproject.toml) medtune's DPO/KTO trainers were written and tested against: they
override TRL's private `_compute_loss`, `_precompute_ref_logps` and `_prepare_dataset` and swap its private
`_use_triton`. On any other version medtune trains with TRL's own DPOTrainer / KTOTrainer instead."""
# Logged TRL keys kept in metrics.jsonl: DPO/KTO rewards, margins, accuracies, log-probs, KL; GRPO rewards.
ALIGN_LOG_KEYS = ("rewards/", "logps/", "logits/", "kl", "reward", "frac_reward_zero_std", "completions/",
                  "entropy", "clip_ratio")


class AlignError(UserError):
    """The align stage cannot start or had to stop (the message says why and what to do)."""


def sft_adapter(run_dir: Path) -> Path | None:
    """The run's finished SFT adapter directory, or None when train has not completed."""
    done = read_json(run_dir / "train_manifest.json", {}).get("status") == "completed"
    return run_dir if done and (run_dir / "adapter_model.safetensors").is_file() else None


def align_fingerprint(cfg: Config, sft: Path | None) -> str:
    d = cfg.to_dict()
    inputs = []
    files = cfg.align.train_files if cfg.align.pairs == "files" else cfg.align.self_pairs.prompts
    if files:
        inputs = [{"bytes": Path(p).stat().st_size, "sha256": sha256_file(Path(p))} if Path(p).exists() else p
                  for p in expand_inputs(files, "align.train_files")]
    # The adapter's own bytes: a retrained SFT adapter (even with the same config) must realign.
    sft_fp = sha256_file(sft / "adapter_model.safetensors") if sft else None
    return fingerprint({"format": ALIGN_FORMAT, "model": d["model"], "align": d["align"], "inputs": inputs,
                        # self-made pairs come from the training data; a fresh LoRA is shaped by lora
                        "data": d["data"] if cfg.align.pairs == "self" else None,
                        "lora": None if sft else d["lora"], "sft": sft_fp})


def align_model(cfg: Config, force: bool = False, resume: str | None = None, log=print) -> dict:
    """Run the align stage; returns the contents of align/train_results.json."""
    if cfg.align is None:
        raise AlignError("the config has no `align:` section; add one (see configs/demo.yaml) to run the align stage")
    out = cfg.run_dir / "align"
    sft = sft_adapter(cfg.run_dir)
    run = StageRun("align", out, "align_manifest.json", align_fingerprint(cfg, sft),
                   # ref/: TRL's frozen copy of the reference adapter (the SFT adapter is in the run directory)
                   outputs=(*TRAINER_OUTPUTS, "data_stats.json"), strays=(*TRAINER_STRAYS, "ref"))
    checkpoint = choose_checkpoint(run, resume, force, log)
    if checkpoint is None and not force and run.is_current("adapter_model.safetensors"):
        log(f"align: {out} already holds the aligned adapter for this config (fingerprint {run.fingerprint}); "
            "skipping (--force reruns it)")
        return read_json(out / "train_results.json", {})
    if checkpoint is None:
        run.clear()
    out.mkdir(parents=True, exist_ok=True)
    run.start()
    timeline = Timeline()
    with timeline("model_loading"):
        model, tokenizer, base, backends = load_policy(cfg, sft, log)
    with reward_grader(cfg) as grader:  # rubric scorer/reward: the grader answers while pairs are made, training
        with timeline("data_loading"):
            dataset, data_summary = align_dataset(cfg, model, tokenizer, out, log, grader)
        write_json(out / "data_stats.json", data_summary)
        if cfg.align.gradient_checkpointing is None:  # planned for the longest row the data holds
            choose_checkpointing(align_plan_config(cfg), model.config, backends, world=world_size(),
                                 longest=longest_sequence(dataset))
        log(f"align: on {'GPU' if backends.device == 'cuda' else 'CPU'}: " + "; ".join(backends.reasons))
        with timeline("trainer_setup"):  # the reference log-probs are computed here (precompute_ref_log_probs)
            trainer = build_align_trainer(cfg, model, tokenizer, dataset, backends, log, grader)
        trainable, total = count_parameters(trainer.model)
        log(f"align: {cfg.align.algorithm.upper()} on {len(dataset):,} row(s), {trainable:,} of {total:,} parameters "
            f"trainable; reference = {'the SFT model (frozen copy of ' + str(sft) + ')' if sft else 'the base model'}"
            + (f"; resuming from {checkpoint}" if checkpoint else ""))
        with timeline("training"):
            result = _train(trainer, checkpoint, run, out)
    trainer.save_model(str(out))
    trainer.save_state()
    results = _results(result.metrics, trainer, cfg, base, sft, backends.precision, checkpoint, trainable, total,
                       data_summary)
    results.update(attn_implementation=backends.attn_implementation, batching=backends.batching,
                   checkpoint_every_n_layers=backends.checkpoint_every)
    write_json(out / "train_results.json", results)
    write_json(out / "timeline.json", {"events": timeline.events})
    (out / "README.md").write_text(model_card(cfg, base, sft, results), encoding="utf-8")
    run.complete()
    log(f"align: done in {results.get('train_runtime', 0):.0f} s, loss {results.get('first_logged_loss')} -> "
        f"{results.get('last_logged_loss')}; aligned adapter in {out}")
    return results


def _train(trainer, checkpoint: Path | None, run: StageRun, out: Path):
    try:
        return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except NonFiniteLoss as e:
        good = complete_checkpoints(out)
        run.fail(str(e))
        raise AlignError(f"align stopped at {e}: the loss diverged. Nothing from that step was saved; the last good "
                         f"checkpoint is {good[-1] if good else 'none'}. Lower align.learning_rate or align.beta "
                         "and rerun (it resumes from that checkpoint).") from None


@contextlib.contextmanager
def reward_grader(cfg: Config):
    """The rubric grader that GRPO's `rubric` reward or the `rubric` self-pairs scorer asks (evaluate.grader_base_url,
    else the judge; builtin:rules starts the rule-based grader for the block), or None when nothing needs one."""
    a = cfg.align
    reward = a.algorithm == "grpo" and a.grpo_data == "open" and "rubric" in a.rewards
    if not (reward or (a.pairs == "self" and a.self_pairs.scorer == "rubric")):
        yield None
        return
    from medtune.generate.grader import configured_grader, grader_endpoint

    settings = configured_grader(cfg.evaluate)
    if settings is None:
        raise AlignError("align.rewards or align.self_pairs.scorer names rubric but no grader is set: set "
                         "evaluate.grader_base_url and "
                         "evaluate.grader_model (or evaluate.judge_base_url and judge_model)")
    with grader_endpoint(settings) as grader:
        yield grader


# --- the policy and its reference ---------------------------------------------------------------------


def load_policy(cfg: Config, sft: Path | None, log=print):
    """(model, tokenizer, base, backends): base + the SFT adapter as a trainable PeftModel (TRL then copies it
    into the frozen reference), or the plain base when there is no SFT adapter (TRL adds a new LoRA). Precision
    and gradient checkpointing are decided by train's rules (medtune.train.backends.align_backends)."""
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    cuda = torch.cuda.is_available()
    backends = align_backends(cfg, cuda, cuda and torch.cuda.is_bf16_supported(), is_flash_attn_2_available(),
                              is_flash_attn_3_available())
    base = resolve_base_model(cfg.model.name_or_path, cfg.run_dir)
    try:
        model = load_causal_lm(base, dtype=torch_dtype(backends.precision), revision=cfg.model.revision,
                               trust_remote_code=cfg.model.trust_remote_code,
                               attn_implementation=backends.attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(str(sft or base), trust_remote_code=cfg.model.trust_remote_code)
    except OSError as e:
        raise AlignError(f"model.name_or_path: cannot load '{base}': {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if sft is None:
        log(f"align: no finished train stage in {cfg.run_dir}: starting from the base model with a new LoRA; the "
            "reference model is the base model")
        return model, tokenizer, base, backends
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(sft), is_trainable=True)
    log(f"align: policy and reference start from the SFT adapter in {sft}")
    return model, tokenizer, base, backends


# --- data --------------------------------------------------------------------------------------------


def align_dataset(cfg: Config, model, tokenizer, out: Path, log=print, grader=None):
    """(datasets.Dataset, summary) for the configured algorithm and data source; `grader`: the rubric grader for
    the `rubric` self-pairs scorer (reward_grader)."""
    import datasets

    from medtune.data.align import read_align_data

    a = cfg.align
    if a.algorithm == "grpo":
        from medtune.align import grpo as align_grpo

        if a.grpo_data == "open":  # the contamination guard: the evaluate stage's safety prompts and questions
            from medtune.data.open_prompts import evaluation_prompts

            prompts, summary = align_grpo.load_open_items(
                a.train_files, evaluation_prompts(cfg.evaluate.safety, cfg.evaluate.questions),
                out / "rejected.jsonl", a.max_samples, log)
            return align_grpo.open_dataset(prompts), {**summary, "rows": summary["kept"]}
        benchmarks = [(b.path, b.format) for b in cfg.evaluate.benchmarks]  # the contamination guard
        items, summary = align_grpo.load_grpo_items(a.train_files, a.mcq_format, benchmarks,
                                                    rejected_path=out / "rejected.jsonl", max_items=a.max_samples)
        log(align_grpo.describe_items(summary, out / "rejected.jsonl"))
        return align_grpo.grpo_dataset(items, a.mcq_format), {**summary, "rows": summary["kept"]}
    files = a.train_files
    pairs_summary = None
    if a.pairs == "self":
        from medtune.align.pairs import SampleAnswers, build_scored_pairs, build_self_pairs, pair_judge, pair_scorer

        sample = SampleAnswers(model, tokenizer, a.self_pairs.generation, a.self_pairs.batch_size,
                               cfg.model.enable_thinking)
        if a.self_pairs.scorer == "reference":
            pairs_summary = build_self_pairs(cfg, tokenizer, sample, out,
                                             pair_judge(cfg) if a.self_pairs.judge else None, log)
        else:
            pairs_summary = build_scored_pairs(cfg, tokenizer, sample, pair_scorer(cfg, grader), out, log)
        files = [str(out / "pairs.jsonl")]
    rows, summary = read_align_data(cfg, tokenizer, files, out / "rejected.jsonl", log)
    if pairs_summary is not None:
        summary["self_pairs"] = pairs_summary
    return datasets.Dataset.from_list(rows), summary


def longest_sequence(dataset) -> int | None:
    """The most tokens one model row of the align data can hold (prompt + the longer answer for DPO, prompt +
    completion for KTO, an upper bound covering its KL rows), or None for GRPO (its completions are sampled)."""
    columns = set(dataset.column_names)
    if "prompt_ids" not in columns or not len(dataset):
        return None
    prompts = [len(ids) for ids in dataset["prompt_ids"]]
    if "chosen_ids" in columns:
        return max(p + max(len(c), len(r)) for p, c, r in zip(prompts, dataset["chosen_ids"], dataset["rejected_ids"]))
    if "completion_ids" in columns:
        return max(prompts) + max(len(c) for c in dataset["completion_ids"])
    return None


# --- the trainer -------------------------------------------------------------------------------------


def trl_config_class(algorithm: str):
    import trl

    return {"dpo": trl.DPOConfig, "kto": trl.KTOConfig, "grpo": trl.GRPOConfig}[algorithm]


def trl_args(cfg: Config, backends: Backends):
    """The TRL config: every align setting under its TRL name, plus align.trl (each key checked)."""
    a = cfg.align
    cls = trl_config_class(a.algorithm)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in a.trl:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise AlignError(f"align.trl.{key}: not a setting of trl.{cls.__name__}"
                             + (f"; did you mean {close[0]}?" if close else ""))
    try:
        return cls(**trl_settings(cfg, backends))
    except (ValueError, TypeError) as e:
        raise AlignError(f"align: TRL rejected the settings: {e}") from None


def trl_settings(cfg: Config, backends: Backends) -> dict:
    """The align config as TRL config values (TRL names), align.trl included, in the precision and with the
    checkpointing of `backends` (align_backends)."""
    a, every = cfg.align, backends.checkpoint_every
    values = dict(
        output_dir=str(cfg.run_dir / "align"), learning_rate=a.learning_rate, num_train_epochs=a.num_train_epochs,
        max_steps=a.max_steps, per_device_train_batch_size=a.per_device_train_batch_size,
        gradient_accumulation_steps=a.gradient_accumulation_steps, lr_scheduler_type=a.lr_scheduler_type,
        warmup_steps=a.warmup_steps, max_grad_norm=a.max_grad_norm, bf16=backends.precision == "bf16",
        use_cpu=backends.device == "cpu", activation_checkpointing=every is not None,
        activation_checkpointing_kwargs=None if every is None else {"use_reentrant": False, "every_n_layers": every},
        logging_steps=a.logging_steps, logging_first_step=True, logging_nan_inf_filter=False,
        save_strategy="steps", save_steps=a.save_steps, save_total_limit=a.save_total_limit, seed=a.seed,
        data_seed=a.seed, report_to=[r for r in cfg.train.report_to if r != "none"], disable_tqdm=True,
        include_num_input_tokens_seen="non_padding")
    if a.beta is not None:
        values["beta"] = a.beta
    if a.algorithm in ("dpo", "kto"):
        # The reference is frozen: its log-probs once, before training, not in every step of every epoch
        # (TRL refuses that together with sync_ref_model, which updates the reference).
        values["precompute_ref_log_probs"] = not a.trl.get("sync_ref_model", False)
    if a.algorithm == "dpo":
        values.update(max_length=a.max_length)
        if a.loss_type is not None:
            values.update(loss_type=list(a.loss_type), loss_weights=a.loss_weights)
    elif a.algorithm == "kto":
        values.update(max_length=a.max_length)
        if a.loss_type is not None:
            values["loss_type"] = a.loss_type[0]
    else:
        values.update(num_generations=a.num_generations, max_completion_length=a.max_completion_length,
                      temperature=a.temperature, scale_rewards=a.scale_rewards,
                      mask_truncated_completions=a.mask_truncated_completions)
        if a.loss_type is not None:
            values["loss_type"] = a.loss_type[0]
    return {**values, **a.trl}


def build_align_trainer(cfg: Config, model, tokenizer, dataset, backends: Backends, log=print, grader=None):
    """TRL's DPOTrainer / KTOTrainer (or align.grpo's GRPOTrainer) with medtune's callbacks; `grader`: the rubric
    grader for align.rewards: [rubric] (reward_grader)."""
    from peft import PeftModel
    from transformers import PrinterCallback

    from medtune.train.callbacks import CompleteMarker, MetricsCallback, NonFiniteGuard

    a, out = cfg.align, cfg.run_dir / "align"
    args = trl_args(cfg, backends)
    callbacks = [NonFiniteGuard(), MetricsCallback(out / "metrics.jsonl", extra_keys=ALIGN_LOG_KEYS, desc="align"),
                 CompleteMarker(out)]
    if not isinstance(model, PeftModel):
        check_lora_targets(model, list(cfg.lora.target_modules))
    peft_config = None if isinstance(model, PeftModel) else lora_config(cfg.lora)
    if a.algorithm == "grpo":
        from medtune.align import grpo as align_grpo

        # align.grpo adds the machine-dependent GRPO settings (vLLM, fp32 on CPU) and the reward weights;
        # the align settings (precision and checkpointing included) override its defaults.
        rubric = align_grpo.rubric_reward(grader, out / "grader_cache.jsonl") if grader is not None else None
        funcs, weights = align_grpo.grpo_rewards(a.grpo_data, a.rewards, a.reward_weights, rubric=rubric)
        args = align_grpo.grpo_config(out, {**trl_settings(cfg, backends), "reward_weights": weights}, log=log)
        trainer = align_grpo.build_grpo_trainer(model, tokenizer, dataset, args, callbacks, log, reward_funcs=funcs,
                                                peft_config=peft_config)
    elif trl_internals_tested(log):
        packed = backends.batching == "packing"
        cls = dpo_trainer_class(packed) if a.algorithm == "dpo" else kto_trainer_class(packed)
        trainer = cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=callbacks)
    else:
        import trl

        cls = trl.DPOTrainer if a.algorithm == "dpo" else trl.KTOTrainer
        trainer = cls(model=model, args=args, train_dataset=trl_text_rows(dataset, tokenizer),
                      processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl replace the printed dicts
    return trainer


def trl_internals_tested(log=print) -> bool:
    """Whether the installed TRL is TESTED_TRL, whose private methods medtune's DPO/KTO trainers override; if
    not, says (once: the stage asks once) that TRL's own trainers run instead."""
    import trl

    if trl.__version__ == TESTED_TRL:
        return True
    log(f"align: TRL {trl.__version__} is installed, not {TESTED_TRL} (the version medtune's DPO/KTO trainers are "
        "tested with): training with TRL's own DPOTrainer/KTOTrainer, which tokenize the rows themselves and score "
        f"every position on CPU (slower). pip install trl=={TESTED_TRL} for medtune's path.")
    return False


def trl_text_rows(dataset, tokenizer):
    """medtune's tokenized rows in TRL's own text format (prompt + chosen/rejected, or prompt + completion +
    label), for TRL's trainers to tokenize: the texts are the decoded ids, the end-of-turn token included."""
    def text(ids):
        return tokenizer.decode(ids, skip_special_tokens=False)

    def to_text(row):
        out = {"prompt": text(row["prompt_ids"])}
        for key in ("chosen", "rejected", "completion"):
            if f"{key}_ids" in row:
                out[key] = text(row[f"{key}_ids"])
        return out

    id_columns = [c for c in dataset.column_names if c.endswith("_ids")]
    return dataset.map(to_text, remove_columns=id_columns)


@contextlib.contextmanager
def compact_lm_head():
    """Inside it, TRL's fused LM head projects only the positions that carry a label on CPU too.

    TRL 1.16's head (`add_fused_lm_head`) scores only the labelled positions on Triton devices and every position
    elsewhere (prompt and padding included, with entropy and top-1 metrics for each): on CPU that is most of a
    DPO step, since a preference row is mostly prompt. The choice is one function, `_use_triton(device)`, read
    at each call; medtune answers True for CPU tensors and leaves every other device to TRL. Values are the same
    either way (tests/test_align.py checks log-probs against a plain log-softmax)."""
    from trl.trainer import utils as trl_utils

    saved = getattr(trl_utils, "_use_triton", None)
    if saved is None:  # a TRL without the switch: its head is used as it is
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or saved(device)
    try:
        yield
    finally:
        trl_utils._use_triton = saved


class _CompactHead:
    """The two TRL entry points under which DPO and KTO call the fused head, run inside compact_lm_head():
    the loss (policy, per-step reference, KTO's KL term; training and evaluation) and the reference pass
    before training (`compute_ref_log_probs` is called only from there)."""

    def _compute_loss(self, *args, **kwargs):
        with compact_lm_head():
            return super()._compute_loss(*args, **kwargs)

    def _precompute_ref_logps(self, *args, **kwargs):
        with compact_lm_head():
            return super()._precompute_ref_logps(*args, **kwargs)


class _PaddingFree:
    """Each padded batch of the loss and of the reference pass runs as one padding-free row
    (medtune.align.padding_free); TRL's per-step reference pass (precompute_ref_log_probs off) stays padded."""

    def _compute_loss(self, model, inputs, return_outputs):
        from medtune.align.padding_free import PaddedAsFlat

        return super()._compute_loss(PaddedAsFlat(model), inputs, return_outputs)

    def compute_ref_log_probs(self, model, inputs):
        from medtune.align.padding_free import PaddedAsFlat

        return super().compute_ref_log_probs(PaddedAsFlat(model), inputs)


def dpo_trainer_class(padding_free: bool = False):
    from trl import DPOTrainer

    class MedtuneDPOTrainer(*((_PaddingFree,) if padding_free else ()), _CompactHead, DPOTrainer):
        """DPOTrainer on rows data.align tokenized with prepare's rule (prompt_ids, chosen_ids, rejected_ids):
        TRL's own tokenization drops the prompt's last token for templates whose generation prompt ends inside
        a token. Over-long rows were rejected (and listed) before, so nothing is filtered here. The LM head
        projects only completion positions (compact_lm_head)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return MedtuneDPOTrainer


def kto_trainer_class(padding_free: bool = False):
    from trl import KTOTrainer

    class MedtuneKTOTrainer(*((_PaddingFree,) if padding_free else ()), _CompactHead, KTOTrainer):
        """KTOTrainer on rows data.align tokenized with prepare's rule (prompt_ids, completion_ids, label), with
        the LM head projecting only completion positions. The KL term's mismatched completions are TRL's: the
        completions rotated by one within each batch."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if not self.calculate_KL:
                return dataset

            def rotate(batch):
                return {"KL_completion_ids": [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]}

            return dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)

    return MedtuneKTOTrainer


# --- results -----------------------------------------------------------------------------------------


def _results(metrics: dict, trainer, cfg: Config, base: str, sft: Path | None, precision: str, checkpoint,
             trainable: int, total: int, data_summary: dict) -> dict:
    history = [h for h in trainer.state.log_history if "loss" in h]
    last = history[-1] if history else {}
    return {
        **metrics,
        "algorithm": cfg.align.algorithm,
        "reference": "sft" if sft else "base",
        "sft_adapter": str(sft) if sft else None,
        "base_model": base,
        "first_logged_loss": history[0]["loss"] if history else None,
        "last_logged_loss": last.get("loss"),
        **{f"last_{k.replace('/', '_')}": v for k, v in last.items() if k.startswith(ALIGN_LOG_KEYS)},
        "global_step": trainer.state.global_step,
        "num_train_rows": data_summary.get("rows"),
        "trainable_params": trainable,
        "total_params": total,
        "per_device_train_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "precision": precision,
        "resumed_from": str(checkpoint) if checkpoint else None,
    }


def model_card(cfg: Config, base: str, sft: Path | None, results: dict) -> str:
    a = cfg.align
    return f"""---
base_model: {base}
library_name: peft
tags: [medtune, lora, medical, {a.algorithm}]
---
# LoRA adapter aligned with medtune ({a.algorithm.upper()})

{'The SFT adapter in `' + str(sft) + '`' if sft else 'A new LoRA on the base model'}, trained further with TRL's
{a.algorithm.upper()} for {results.get('global_step')} steps (learning rate {a.learning_rate}); the reference
model was {'the SFT model (a frozen copy of its adapter)' if sft else 'the base model'}.
Loss {results.get('first_logged_loss')} -> {results.get('last_logged_loss')}.

Use it like the SFT adapter: `medtune chat {cfg.run_dir / 'align'}`, `medtune merge {cfg.run_dir / 'align'} -o DIR`,
or `adapter: run:align` in evaluate.compare. Prompts are the non-thinking chat-template prompts
(`enable_thinking={cfg.model.enable_thinking}`).

Not a medical device: answers are not medical advice. Made with medtune {__version__}.
"""
