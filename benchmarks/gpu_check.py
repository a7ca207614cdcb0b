"""One-call GPU acceptance (`make gpu-check`): every GPU-only path of medtune, each part pass/fail/skip with a reason.

Run as: python benchmarks/gpu_check.py [--output gpu-check.json] [--budget 480] [--no-install] [--dry-run]

Parts (`--parts` picks some; each in its own try, so one failure hides nothing; a total time guard skips what would not fit):
  install         pip install -e '.[gpu,vllm]' (flash-attn, liger-kernel, vllm, bitsandbytes). The lent GPU machines
                  have no internet: carry the wheels in and point PIP_FIND_LINKS at them (see the device notes'
                  wheel note), or run this on an online GPU box; --no-install skips the step.
  train           benchmarks/gpu_train.py: medtune vs TRL default tokens/s, MFU and peak memory on the Qwen3-8B
                  architecture (random init, bf16), and medtune padding-free vs medtune with padded batches.
  packing_loss    padding-free packing (position ids, flash-attention varlen on a GPU; SDPA's block-diagonal mask
                  on CPU) gives the same loss as the same samples in a padded batch, and align's padding-free
                  DPO/KTO path the same per-token log-probs as the padded batch.
  liger_loss      medtune's loss through Liger's fused linear cross-entropy equals the plain chunked loss (GPU).
  qlora_step      one 4-bit (nf4, double quantization) LoRA step on bitsandbytes: finite loss, LoRA gradients,
                  the base weights really 4-bit (runs on CPU too: bitsandbytes 0.50 has a CPU backend).
  vllm_compare    `medtune evaluate compare --engine vllm` on the tiny model: answers written (GPU + vllm).
  serve_vllm      `medtune serve --engine vllm`: one /v1/chat/completions answer (GPU + vllm).

--dry-run: CPU and tiny shapes; validates the arguments, runs what can run on CPU (packing_loss, qlora_step,
train's own dry run) and marks the GPU-only parts skipped with their reasons. Writes one JSON object (also
printed as the last line).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("install", "train", "packing_loss", "liger_loss", "qlora_step", "vllm_compare", "serve_vllm")
PART_SECONDS = {"install": 120, "train": 330, "packing_loss": 30, "liger_loss": 30, "qlora_step": 60,
                "vllm_compare": 120, "serve_vllm": 120}
"""Upper bounds used by the time guard: a part starts only if its bound fits in what is left."""


def requirement(name: str, args) -> str | None:
    """Why `name` cannot run here (it is then skipped with this reason), or None."""
    gpu = cuda() and not args.dry_run
    if name == "install":
        return "--no-install" if args.no_install else "--dry-run installs nothing" if args.dry_run else None
    if name == "train":
        return None if gpu or args.dry_run else "no CUDA GPU"
    if name == "packing_loss":
        return "flash-attn is not installed (the gpu extra)" if gpu and not has("flash_attn") else None
    if name == "liger_loss":
        return ("Liger's fused kernels need a CUDA GPU (Triton)" if not gpu else
                None if has("liger_kernel") else "liger-kernel is not installed (the gpu extra)")
    if name == "qlora_step":
        return None if has("bitsandbytes") else "bitsandbytes is not installed"
    return ("vLLM needs a CUDA GPU" if not gpu else None if has("vllm") else "vllm is not installed (the vllm extra)")


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {out.returncode}: {(out.stderr or out.stdout)[-1500:]}")
    return out


# --- the parts ---------------------------------------------------------------------------------------------


def part_install(args, budget: float) -> dict:
    run([sys.executable, "-m", "pip", "install", "-q", "-e", ".[gpu,vllm]"], timeout=budget)
    return {"installed": {m: has(m) for m in ("flash_attn", "liger_kernel", "vllm", "bitsandbytes")}}


def part_train(args, budget: float) -> dict:
    cmd = [sys.executable, "benchmarks/gpu_train.py"] + (["--dry-run"] if args.dry_run else ["--steps", "20"])
    result = json.loads(run(cmd, timeout=budget).stdout.strip().splitlines()[-1])
    return {"result": result}


def _tiny_model(attn: str, device: str, dtype):
    import torch
    from transformers import Qwen3ForCausalLM

    from medtune.modeling import TINY_QWEN3, qwen3_config

    torch.manual_seed(0)
    config = qwen3_config(**{**TINY_QWEN3, "vocab_size": 4096, "hidden_size": 128, "head_dim": 32, "pad_token_id": 0,
                             "bos_token_id": 1, "eos_token_id": 2})
    config._attn_implementation = attn
    return Qwen3ForCausalLM(config).to(device=device, dtype=dtype).eval()


def _samples(n: int = 4):
    import torch

    g = torch.Generator().manual_seed(1)
    lengths = [37, 64, 21, 50][:n]
    ids = [torch.randint(3, 4096, (n_,), generator=g) for n_ in lengths]
    labels = [torch.where(torch.arange(len(x)) < len(x) // 3, -100, x) for x in ids]  # a prompt, then the answer
    return ids, labels


def part_packing_loss(args, budget: float) -> dict:
    import torch

    from medtune.train.loss import target_only_loss

    gpu = cuda() and not args.dry_run
    device, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float32)
    attn = "flash_attention_2" if gpu else "sdpa"
    model = _tiny_model(attn, device, dtype)
    head = model.get_output_embeddings()
    ids, labels = _samples()
    width = max(len(x) for x in ids)
    padded = {"input_ids": torch.zeros(len(ids), width, dtype=torch.long),
              "attention_mask": torch.zeros(len(ids), width, dtype=torch.long),
              "labels": torch.full((len(ids), width), -100)}
    for r, (x, y) in enumerate(zip(ids, labels)):
        padded["input_ids"][r, :len(x)], padded["attention_mask"][r, :len(x)], padded["labels"][r, :len(x)] = x, 1, y
    # Packed as TRL's padding-free collator does: one row, position ids restart per sample, each sample's first
    # label masked so no loss crosses a boundary.
    packed = {"input_ids": torch.cat(ids)[None], "position_ids": torch.cat([torch.arange(len(x)) for x in ids])[None],
              "labels": torch.cat([torch.cat([torch.tensor([-100]), y[1:]]) for y in labels])[None]}
    with torch.no_grad():
        losses = [float(target_only_loss(model, {k: v.to(device) for k, v in b.items()}, None, head))
                  for b in (padded, packed)]
    tolerance = 2e-2 if gpu else 1e-5
    if abs(losses[0] - losses[1]) > tolerance * max(1.0, abs(losses[0])):
        raise AssertionError(f"padded loss {losses[0]:.6f} vs packed {losses[1]:.6f} (tolerance {tolerance})")
    return {"attention": attn, "padded_loss": losses[0], "packed_loss": losses[1], "tolerance": tolerance,
            "align_max_logprob_difference": _align_padding_free(model, padded, device, 0.1 if gpu else 1e-4)}


def _align_padding_free(model, padded: dict, device: str, tolerance: float) -> float:
    """align's padding-free DPO/KTO path (medtune.align.padding_free) through TRL's fused LM head: the per-token
    log-probs of the padded batch and of the same batch run as one flattened row (flash-attention varlen on a
    GPU) agree; returns the largest difference."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from medtune.align.padding_free import PaddedAsFlat

    add_fused_lm_head(model)
    kwargs = {"input_ids": padded["input_ids"].to(device), "attention_mask": padded["attention_mask"].to(device),
              "labels": padded["labels"].to(device), "fused_lm_head": True, "use_cache": False}
    with torch.no_grad():
        plain = model(**kwargs).log_probs.float()
        flat = PaddedAsFlat(model)(**kwargs).log_probs.float()
    difference = float((plain - flat).abs().max())
    if not difference <= tolerance:
        raise AssertionError(f"align padding-free log-probs differ from the padded batch's by {difference:.4g} "
                             f"(tolerance {tolerance})")
    return difference


def part_liger_loss(args, budget: float) -> dict:
    import torch

    from medtune.train.loss import target_only_loss

    model = _tiny_model("sdpa", "cuda", torch.float32)
    head = model.get_output_embeddings()
    ids, labels = _samples()
    batch = {"input_ids": torch.stack([ids[0][:21], ids[2]]).cuda(), "labels": torch.stack([labels[0][:21],
                                                                                           labels[2]]).cuda()}
    with torch.no_grad():
        plain = float(target_only_loss(model, dict(batch), None, head))
        liger = float(target_only_loss(model, dict(batch), None, head, liger=True))
    if abs(plain - liger) > 1e-4 * max(1.0, abs(plain)):
        raise AssertionError(f"plain loss {plain:.6f} vs Liger {liger:.6f}")
    return {"plain_loss": plain, "liger_loss": liger}


def part_qlora_step(args, budget: float) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from medtune.config import QuantizationConfig
    from medtune.train.quantize import load_kwargs, prepare_for_training
    from medtune.train.loss import target_only_loss

    from transformers import AutoModelForCausalLM

    gpu = cuda() and not args.dry_run
    device = "cuda" if gpu else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        _tiny_model("sdpa", "cpu", torch.float32).save_pretrained(tmp)
        q = QuantizationConfig(bits=4, compute_dtype="bf16" if gpu else "fp32")
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16 if gpu else torch.float32,
                                                     **load_kwargs(q, device))
    kind = type(model.model.layers[0].self_attn.q_proj).__name__
    model = get_peft_model(prepare_for_training(model, True), LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    ids, labels = _samples()
    batch = {"input_ids": torch.stack([ids[0][:21], ids[2]]).to(device),
             "labels": torch.stack([labels[0][:21], labels[2]]).to(device)}
    loss = target_only_loss(model, batch, None, model.get_output_embeddings())
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    if kind != "Linear4bit" or not torch.isfinite(loss) or not grads or not any(g.abs().sum() > 0 for g in grads):
        raise AssertionError(f"layer {kind}, loss {float(loss)}, {len(grads)} LoRA gradients")
    return {"device": device, "layer": kind, "loss": float(loss), "lora_gradients": len(grads)}


def _tiny_run(tmp: Path) -> Path:
    from medtune.modeling import resolve_base_model

    return Path(resolve_base_model("builtin:tiny-qwen3", tmp))


def part_vllm_compare(args, budget: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model = _tiny_run(Path(tmp))
        out = Path(tmp) / "cmp"
        run([sys.executable, "-m", "medtune", "evaluate", "compare", "--model", str(model), "--engine", "vllm",
             "--max-questions", "4", "--output", str(out)], timeout=budget)
        answers = (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()
    if len(answers) < 4:
        raise AssertionError(f"{len(answers)} answers written, expected 4")
    return {"answers": len(answers)}


def part_serve_vllm(args, budget: float) -> dict:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        model = _tiny_run(Path(tmp))
        server = subprocess.Popen([sys.executable, "-m", "medtune", "serve", str(model), "--engine", "vllm",
                                   "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + budget
            while time.monotonic() < deadline:
                try:
                    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30, json={
                        "messages": [{"role": "user", "content": "头痛怎么办？"}], "max_tokens": 16})
                    r.raise_for_status()
                    return {"answer_chars": len(r.json()["choices"][0]["message"]["content"])}
                except httpx.TransportError:
                    if server.poll() is not None:
                        raise RuntimeError(f"server exited: {server.stderr.read()[-1500:]}") from None
                    time.sleep(2)
            raise TimeoutError(f"no answer within {budget:.0f} s")
        finally:
            server.terminate()
            server.wait(timeout=30)


# --- the runner ----------------------------------------------------------------------------------------------


def check(args) -> dict:
    started = time.monotonic()
    report = {"check": "gpu_check", "dry_run": args.dry_run, "budget_seconds": args.budget, "parts": {}}
    for name in args.parts:
        left = args.budget - (time.monotonic() - started)
        t0 = time.monotonic()
        if reason := requirement(name, args):
            entry = {"status": "skip", "reason": reason}
        elif PART_SECONDS[name] > left:
            entry = {"status": "skip", "reason": f"time guard: {left:.0f} s of the {args.budget:.0f} s budget left, "
                                                 f"the part may take {PART_SECONDS[name]} s"}
        else:
            try:
                entry = {"status": "pass", **globals()[f"part_{name}"](args, PART_SECONDS[name])}
            except Exception as e:  # one failing part must not hide the others
                entry = {"status": "fail", "reason": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()[-2000:]}
        entry["seconds"] = round(time.monotonic() - t0, 1)
        report["parts"][name] = entry
    report["device"] = _device()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["passed"] = all(p["status"] != "fail" for p in report["parts"].values())
    return report


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("gpu-check.json"))
    parser.add_argument("--budget", type=float, default=480.0, help="total seconds (default 480 = 8 minutes)")
    parser.add_argument("--no-install", action="store_true", help="use what is installed")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes; GPU-only parts are skipped")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    args = parser.parse_args()
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := [p for p in args.parts if p not in PARTS]:
        parser.error(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if args.budget <= 0:
        parser.error("--budget must be positive")
    os.environ.setdefault("TQDM_DISABLE", "1")
    report = check(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
