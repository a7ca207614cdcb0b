"""Training on several processes, proven on CPU: DDP over gloo (2 processes, and 2 "nodes" of one process
with a loopback rendezvous) trains the same adapter as 1 process with the same effective batch, resumes
after SIGKILL, evaluates a validation set that does not divide by the number of ranks, and stops every
rank when one rank sees a NaN; medtune's eval and stop decisions under torch's own FSDP2 on CPU; every
accelerate config either runs here or is checked for what it would launch; launched processes that are
not one distributed training stop with a clear error; the Slurm example renders one command per node.

The multi-process runs use the small-vocabulary model and share one 1-process reference run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from medtune.config import config_from_dict
from medtune.train.common import COMPLETE_MARKER, TrainingError
from medtune.train.backends import select_backends
from medtune.train.stage import train_model
from medtune.train.loss import whole_head_weight
from medtune.train.common import process_group_problems
from tests.conftest import ROOT, small_vocab_model, synthetic_prepared_data
from tests.test_train import adapter_tensors, make_cfg

PY = sys.executable
# One SGD step is linear in the gradient, so the 2-process sum of gradients must match the 1-process one to
# float rounding; Adam's first steps (g / sqrt(g^2)) would amplify rounding on near-zero gradients.
RUN = dict(max_steps=6, per_device_train_batch_size=4, optim="sgd", learning_rate=0.5, batching="padding",
           eval_strategy="steps", eval_steps=3, save_steps=2)
TOLERANCE = 1e-5  # absolute, on every adapter weight and on the eval loss (fp32, gloo all-reduce order)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _start(*cmd: str) -> subprocess.Popen:
    return subprocess.Popen(list(cmd), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (torchrun puts each rank in a session of its own)."""
    import psutil

    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in family:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=30)
    proc.communicate()


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_all(proc)
        pytest.fail(f"hung for {timeout} s (killed)")
    return out


def _yaml(path: Path, cfg) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return small_vocab_model(tmp_path_factory.mktemp("model") / "small")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model):
    """1 process, batch 8: the run every multi-process run must reproduce (7 validation samples)."""
    run = tmp_path_factory.mktemp("ref") / "run"
    synthetic_prepared_data(run, n_train=48, n_val=7)
    train_model(make_cfg(run, model, **{**RUN, "per_device_train_batch_size": 8}), log=lambda *a: None)
    return run


def _same_adapter(a: Path, b: Path) -> None:
    import torch

    x, y = adapter_tensors(a), adapter_tensors(b)
    assert x.keys() == y.keys()
    for k in x:
        assert torch.allclose(x[k], y[k], atol=TOLERANCE), (k, (x[k] - y[k]).abs().max())
    assert any(v.abs().sum() > 0 for k, v in x.items() if "lora_B" in k)


def _peft_loads(run: Path, model: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model)), str(run))


def _eval_loss(run: Path) -> float:
    return json.loads((run / "eval_results.json").read_text())["eval_loss"]


# --- checks without processes ------------------------------------------------------------------------


def _state(kind: str, processes: int = 2, fsdp=None, deepspeed=None):
    return SimpleNamespace(distributed_type=SimpleNamespace(value=kind), num_processes=processes,
                           fsdp_plugin=fsdp, deepspeed_plugin=deepspeed)


def test_process_group_problems():
    assert process_group_problems(_state("MULTI_CPU"), world=2, group_size=2, asked=None) == []
    assert process_group_problems(_state("FSDP", fsdp=object()), world=2, group_size=2, asked="FSDP") == []
    assert process_group_problems(_state("NO", 1), world=1, group_size=1, asked=None) == []
    alone = process_group_problems(_state("NO", 1), world=2, group_size=1, asked=None)
    assert len(alone) == 3 and "DistributedType.NO" in alone[1]
    ddp_for_fsdp = process_group_problems(_state("MULTI_CPU"), world=2, group_size=2, asked="FSDP")
    assert len(ddp_for_fsdp) == 1 and "asks for FSDP but accelerate runs MULTI_CPU" in ddp_for_fsdp[0]
    assert process_group_problems(_state("MULTI_CPU"), world=2, group_size=2, asked="DEEPSPEED")
    assert process_group_problems(_state("DEEPSPEED"), world=2, group_size=2, asked="DEEPSPEED")  # no plugin


def _launch_env(name: str) -> tuple[object, dict]:
    """What `accelerate launch` (as medtune.train.launch calls it) would start for this config on 2 nodes x 4
    GPUs: accelerate's own parser and environment builder, without starting anything."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    from medtune.train.launch import launch_command

    cmd = launch_command(["c.yaml"], nproc_per_node=4, nnodes=2, node_rank=1, master_addr="10.0.0.1",
                         master_port=29500, accelerate_config=str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(cmd[3:]))
    # DeepSpeed's environment builder needs deepspeed installed; its fields come from the same config.
    return args, ({} if args.use_deepspeed else prepare_multi_gpu_env(args))


@pytest.mark.parametrize("name", ["ddp", "fsdp", "zero2", "zero3"])
def test_accelerate_config_launches_what_it_says(name):
    args, env = _launch_env(name)
    assert (args.num_processes, args.num_machines, args.machine_rank) == (8, 2, 1)
    assert args.main_process_ip == "10.0.0.1" and args.mixed_precision == "no"  # medtune picks the precision
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == {
        "ddp": (True, False, False), "fsdp": (False, True, False), "zero2": (False, False, True),
        "zero3": (False, False, True)}[name]
    if name == "fsdp":
        # With SHARDED_STATE_DICT, Trainer.save_model writes no adapter at all.
        assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
        assert env["FSDP_VERSION"] == "2" and env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "Qwen3DecoderLayer"
    if name == "ddp":
        assert "ACCELERATE_USE_FSDP" not in env and env["ACCELERATE_MIXED_PRECISION"] == "no"
    if name == "zero3":
        assert args.zero_stage == 3 and args.zero3_save_16bit_model is True  # else no adapter is saved
    if name == "zero2":
        assert args.zero_stage == 2


def test_flash_attention_3_needs_its_own_package():
    fa3 = config_from_dict({"output_dir": "x", "model": {"attn_implementation": "flash_attention_3"}})
    with pytest.raises(TrainingError, match=r"flash-attn 3 \(flash_attn_interface\) is not installed"):
        select_backends(fa3, cuda=True, bf16_supported=True, flash_attn=True, liger=False, flash_attn_3=False)
    ok = select_backends(fa3, cuda=True, bf16_supported=True, flash_attn=False, liger=False, flash_attn_3=True)
    assert ok.attn_implementation == "flash_attention_3"
    fa2 = config_from_dict({"output_dir": "x", "model": {"attn_implementation": "flash_attention_2"}})
    with pytest.raises(TrainingError, match="flash-attn is not installed"):
        select_backends(fa2, cuda=True, bf16_supported=True, flash_attn=False, liger=False, flash_attn_3=True)


def test_liger_takes_the_head_weight_only_where_it_is_whole():
    stage = lambda n: SimpleNamespace(zero_stage=n)  # noqa: E731
    assert whole_head_weight(_state("MULTI_GPU"))
    assert whole_head_weight(_state("DEEPSPEED", deepspeed=stage(2)))
    assert not whole_head_weight(_state("DEEPSPEED", deepspeed=stage(3)))  # an empty placeholder there
    assert not whole_head_weight(_state("FSDP"))  # a shard there


def test_eval_runs_the_same_number_of_forwards_on_every_rank(model):
    """5 samples in batches of 2 are 3 batches: split over 2 ranks, both must run 2 forwards (FSDP and ZeRO-3
    forwards are collective), and the two shares must sum to the 1-process totals."""
    import datasets
    from transformers import AutoModelForCausalLM

    from medtune.modeling import dataset_loss

    lm = AutoModelForCausalLM.from_pretrained(str(model))
    calls = []
    lm.register_forward_hook(lambda *a: calls.append(1))
    rows = {"input_ids": [[5, 6, 7, 8], [5, 6, 7], [9, 10, 11, 12, 13], [4, 5], [3, 4, 5, 6, 7, 8]]}
    rows["labels"] = [[-100] + r[1:] for r in rows["input_ids"]]
    rows["labels"][1], rows["labels"][3] = [-100] * 3, [-100] * 2  # their batch scores nothing but runs a forward
    ds = datasets.Dataset.from_dict(rows)
    whole = dataset_loss(lm, ds, batch_size=2)
    counts, parts = [], []
    for rank in (0, 1):
        calls.clear()
        parts.append(dataset_loss(lm, ds, batch_size=2, rank=rank, world=2))
        counts.append(len(calls))
    assert counts == [2, 2]
    assert sum(p[1] for p in parts) == whole[1] == 3 + 4 + 5
    assert sum(p[0] for p in parts) == pytest.approx(whole[0], rel=1e-6)


def test_train_stage_fails_without_a_loadable_adapter(tmp_path, model, monkeypatch):
    """Trainer.save_model under FSDP with SHARDED_STATE_DICT returns without writing: the stage must fail,
    not report success (the check loads the adapter with PEFT)."""
    from transformers import Trainer

    run = tmp_path / "run"
    synthetic_prepared_data(run, n_train=8, n_val=2)
    real = Trainer.save_model

    def save_checkpoints_only(self, output_dir=None, _internal_call=False):
        if _internal_call:  # checkpoints (FSDP saves those itself); the final adapter is not written
            real(self, output_dir, _internal_call)

    monkeypatch.setattr(Trainer, "save_model", save_checkpoints_only)
    with pytest.raises(TrainingError, match="no adapter was written.*FULL_STATE_DICT"):
        train_model(make_cfg(run, model, max_steps=1, eval_strategy="no", save_steps=100), log=lambda *a: None)
    assert json.loads((run / "train_manifest.json").read_text())["status"] == "failed"
    assert not (run / "train_results.json").exists()


def test_saved_adapter_check_names_missing_and_empty_weights(tmp_path, model):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from medtune.train.common import check_saved_adapter

    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model)),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft.save_pretrained(tmp_path)
    check_saved_adapter(tmp_path, str(model))  # a whole adapter passes
    weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    first = sorted(weights)[0]
    save_file({**weights, first: torch.empty(0)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(TrainingError, match="empty or not finite"):
        check_saved_adapter(tmp_path, str(model))
    save_file({k: v for k, v in weights.items() if k != first}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(TrainingError, match="PEFT cannot load this adapter whole.*missing adapter keys"):
        check_saved_adapter(tmp_path, str(model))


# --- several processes -------------------------------------------------------------------------------


@pytest.mark.slow
def test_fsdp_config_on_cpu_stops_every_rank_with_a_clear_error(tmp_path, model):
    """accelerate 1.15 runs FSDP only on GPUs: on CPU each rank would train plain DDP (or alone) while the
    user asked for sharding. Every rank must stop before writing anything."""
    run = tmp_path / "run"
    synthetic_prepared_data(run, n_train=16, n_val=2)
    config = _yaml(tmp_path / "c.yaml", make_cfg(run, model, max_steps=1, eval_strategy="no"))
    proc = _start(PY, "-m", "medtune", "train", str(config), "--nproc-per-node", "2", "--accelerate-config",
                  str(ROOT / "configs" / "accelerate" / "fsdp.yaml"))
    out = _finish(proc)
    assert proc.returncode != 0, out
    assert out.count("not one rank of one distributed training") == 2, out
    assert "asks for FSDP but accelerate runs MULTI_CPU" in out
    assert not (run / "adapter_model.safetensors").exists() and not (run / "train_manifest.json").exists()


@pytest.mark.slow
def test_fsdp2_on_cpu_eval_step_and_stop_decision(tmp_path, model):
    """torch 2.13's FSDP2 (fully_shard) runs on CPU over gloo. Under it: an eval whose batches do not divide
    by the ranks finishes (unequal forwards would wait forever) with the 1-process loss; medtune's loss on
    2 + 2 samples gives the LoRA gradients of 1 process on all 4 (1e-6); a stop wanted by one rank is
    taken by both."""
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from medtune.modeling import right_padded, dataset_loss
    from medtune.train.loss import target_only_loss

    synthetic_prepared_data(tmp_path, n_train=4, n_val=5)
    proc = _start(PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", f"--master_port={_port()}",
                  str(ROOT / "tests" / "fsdp2_worker.py"), str(model), str(tmp_path / "data"), str(tmp_path))
    out = _finish(proc, timeout=150)
    assert proc.returncode == 0, out
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    torch.manual_seed(0)
    lm = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model)),
                        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    nll, tokens = dataset_loss(lm, datasets.load_from_disk(str(tmp_path / "data" / "val")), batch_size=2)
    for r in ranks:
        assert r["sharded"] and r["stop"] is True
        assert r["eval"]["eval_tokens"] == tokens and r["eval"]["eval_loss"] == pytest.approx(nll / tokens, abs=1e-5)
    rows = datasets.load_from_disk(str(tmp_path / "data" / "train"))[:]
    ids, labels, mask = right_padded(rows["input_ids"], rows["labels"], [0, 1, 2, 3], pad_id=0)
    target_only_loss(lm, {"input_ids": ids, "attention_mask": mask, "labels": labels}, None,
                     lm.get_output_embeddings()).backward()
    sharded = torch.load(tmp_path / "grads.pt")
    assert sharded.keys() == {n for n, p in lm.named_parameters() if p.requires_grad}
    for n, p in lm.named_parameters():
        if p.requires_grad:
            assert torch.allclose(sharded[n], p.grad, atol=1e-6), n
    assert any(g.abs().sum() > 0 for g in sharded.values())


@pytest.mark.slow
def test_ddp_two_processes_equal_one_and_resume_after_sigkill(tmp_path, model, reference):
    """2 processes x batch 4 == 1 process x batch 8: killed (SIGKILL, launcher and ranks) after checkpoint 2,
    resumed through configs/accelerate/ddp.yaml, the adapter equals the reference and PEFT loads it; the
    7-sample validation set (not divisible by 2) gives the reference's eval loss."""
    run = tmp_path / "run"
    synthetic_prepared_data(run, n_train=48, n_val=7)
    config = _yaml(tmp_path / "c.yaml", make_cfg(run, model, **RUN))
    proc = _start(PY, "-m", "medtune", "train", str(config), "--nproc-per-node", "2")
    deadline = time.time() + 180
    while not (run / "checkpoint-2" / COMPLETE_MARKER).exists():
        assert proc.poll() is None, "training ended before it could be killed:\n" + proc.stdout.read()
        assert time.time() < deadline, "no checkpoint-2 in 180 s"
        time.sleep(0.01)
    _kill_all(proc)
    assert not (run / "adapter_model.safetensors").exists()
    resumed = _start(PY, "-m", "medtune", "train", str(config), "--nproc-per-node", "2", "--accelerate-config",
                     str(ROOT / "configs" / "accelerate" / "ddp.yaml"))
    out = _finish(resumed)
    assert resumed.returncode == 0, out
    assert "resuming from the latest complete checkpoint" in out
    assert out.count("parameters:") == 1  # only rank 0 prints
    results = json.loads((run / "train_results.json").read_text())
    assert results["world_size"] == 2 and results["effective_batch_size"] == 8 and results["global_step"] == 6
    _same_adapter(run, reference)
    _peft_loads(run, model)
    assert _eval_loss(run) == pytest.approx(_eval_loss(reference), abs=TOLERANCE)
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "eval_loss" in x]
    assert [e["step"] for e in evals][-1] == 6 and all(e["eval_tokens"] == evals[0]["eval_tokens"] for e in evals)


@pytest.mark.slow
def test_two_nodes_over_loopback_equal_one_process(tmp_path, model, reference):
    """`medtune train --nnodes 2` launched twice (node ranks 0 and 1, one process each, rendezvous on
    127.0.0.1) trains the reference adapter."""
    run = tmp_path / "run"
    synthetic_prepared_data(run, n_train=48, n_val=7)
    config = _yaml(tmp_path / "c.yaml", make_cfg(run, model, **RUN))
    port = str(_port())
    nodes = [_start(PY, "-m", "medtune", "train", str(config), "--nnodes", "2", "--node-rank", str(r),
                    "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", port) for r in (0, 1)]
    outs = [_finish(p) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs
    assert "--nnodes=2" in outs[1] and "--node_rank=1" in outs[1]
    assert json.loads((run / "train_results.json").read_text())["world_size"] == 2
    _same_adapter(run, reference)
    assert _eval_loss(run) == pytest.approx(_eval_loss(reference), abs=TOLERANCE)


NAN_ON_RANK_1 = """
import os, sys
from medtune.train import callbacks
from medtune.cli import main

real = callbacks.non_finite_weights
calls = []

def rank1_diverges_at_step_3(model):
    calls.append(1)
    return real(model) or (os.environ["RANK"] == "1" and len(calls) == 3)

callbacks.non_finite_weights = rank1_diverges_at_step_3
sys.exit(main(["train", sys.argv[1]]))
"""


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank(tmp_path, model):
    """Rank 1 alone sees a non-finite weight at step 3 (its shard, under FSDP): both ranks stop at step 3
    with the same error, within the timeout, and the last good checkpoint is kept."""
    run = tmp_path / "run"
    synthetic_prepared_data(run, n_train=48, n_val=2)
    config = _yaml(tmp_path / "c.yaml", make_cfg(run, model, **{**RUN, "eval_strategy": "no"}))
    script = tmp_path / "nan_rank1.py"
    script.write_text(NAN_ON_RANK_1)
    proc = _start(PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", f"--master_port={_port()}",
                  str(script), str(config))
    out = _finish(proc, timeout=180)
    assert proc.returncode != 0
    assert out.count("training stopped at step 3: a trainable weight became NaN/inf") == 2, out
    assert out.count("last good checkpoint is") == 2 and str(run / "checkpoint-2") in out
    assert json.loads((run / "train_manifest.json").read_text())["status"] == "failed"


def test_slurm_example_renders_one_launch_per_node(tmp_path):
    """configs/slurm/medtune-train.sbatch with fake srun/scontrol and a `medtune` that prints its arguments:
    each node's medtune command, and the torchrun / accelerate command medtune derives from it."""
    from medtune.cli import build_parser
    from medtune.train.launch import launch_command

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "scontrol": 'printf "gpu-a07\\ngpu-a08\\ngpu-b01\\n"\n',
        # srun runs the task once per node, each with its SLURM_NODEID
        "srun": 'while [[ $1 == --* ]]; do shift; done\n'
                'for i in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$i "$@"; done\n',
        "medtune": f'exec {sys.executable} -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@"\n',
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-a[07-08],gpu-b01",
           "SLURM_NNODES": "3"}
    script = ROOT / "configs" / "slurm" / "medtune-train.sbatch"
    for extra, launcher in (([], "torch.distributed.run"), (["--accelerate-config", "fsdp.yaml"], "accelerate")):
        out = subprocess.run(["bash", str(script), "my config.yaml", *extra], env=env, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        argvs = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("[")]
        assert len(argvs) == 3
        for rank, argv in enumerate(argvs):
            assert argv[:2] == ["train", "my config.yaml"]  # the space in the name survives the quoting
            args = build_parser().parse_args(argv)
            assert (args.nnodes, args.node_rank, args.nproc_per_node) == (3, rank, 8)
            assert (args.master_addr, args.master_port, args.accelerate_config) == (
                "gpu-a07", 29500, "fsdp.yaml" if extra else None)
            cmd = launch_command(["my config.yaml"], nproc_per_node=8, nnodes=3, node_rank=rank,
                                 master_addr=args.master_addr, master_port=args.master_port,
                                 accelerate_config=args.accelerate_config)
            assert launcher in " ".join(cmd)
            if extra:
                assert cmd[cmd.index("--num_processes") + 1] == "24" and cmd[cmd.index("--machine_rank") + 1] == str(rank)
            else:
                assert {"--nnodes=3", f"--node_rank={rank}", "--master_addr=gpu-a07", "--nproc_per_node=8"} <= set(cmd)
