"""Training in this process or on several: the one launch decision of `medtune train` and `medtune run`.

torchrun runs DDP, `accelerate launch` runs FSDP/DeepSpeed. The launched processes run
`python -m medtune train ...` again with the launcher's environment (LOCAL_RANK, WORLD_SIZE), which is
how a process knows it must train rather than launch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

from medtune.config import Config, save_config


@dataclass(frozen=True)
class LaunchOptions:
    """How many processes train, and where: the launch flags shared by `medtune train` and `medtune run`."""

    nproc_per_node: int | None = None
    """processes per machine; None = one per visible GPU"""
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    """None = a free port on one machine, 29500 across machines"""
    accelerate_config: str | None = None
    """launch with `accelerate launch --config_file` this file instead of torchrun"""


def is_launched() -> bool:
    return "LOCAL_RANK" in os.environ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(train_args: list[str], nproc_per_node: int, nnodes: int = 1, node_rank: int = 0,
                   master_addr: str = "127.0.0.1", master_port: int | None = None,
                   accelerate_config: str | None = None) -> list[str]:
    """The command line that runs `medtune train <train_args>` on nproc_per_node x nnodes processes."""
    port = master_port or (free_port() if nnodes == 1 else 29500)
    if accelerate_config:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config,
                "--num_processes", str(nproc_per_node * nnodes), "--num_machines", str(nnodes),
                "--machine_rank", str(node_rank), "--main_process_ip", master_addr, "--main_process_port", str(port),
                "-m", "medtune", "train", *train_args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_node}", f"--nnodes={nnodes}",
            f"--node_rank={node_rank}", f"--master_addr={master_addr}", f"--master_port={port}",
            "-m", "medtune", "train", *train_args]


def training_command(train_args: list[str], opts: LaunchOptions) -> list[str] | None:
    """The command that starts `medtune train <train_args>` on several processes, or None to train here.

    Several processes when not launched already and any of: more than one process per machine (by
    default one per visible GPU), more than one machine, or an accelerate config.
    """
    if is_launched():
        return None
    nproc = opts.nproc_per_node or _visible_gpus()
    if nproc <= 1 and opts.nnodes <= 1 and not opts.accelerate_config:
        return None
    return launch_command(train_args, nproc_per_node=nproc, nnodes=opts.nnodes, node_rank=opts.node_rank,
                          master_addr=opts.master_addr, master_port=opts.master_port,
                          accelerate_config=opts.accelerate_config)


def train_or_launch(cfg: Config, train_args: list[str], opts: LaunchOptions, resume: str | None = None,
                    force: bool = False, log=print) -> int:
    """Train `cfg` in this process, or launch `medtune train <train_args>` (which names the same config) on
    several; returns the exit status (the launched processes' on failure)."""
    cmd = training_command(train_args + (["--force"] if force else []) + (["--resume", resume] if resume else []),
                           opts)
    if cmd:
        log("train: launching " + " ".join(cmd))
        sys.stdout.flush()  # before the launched processes write to the same stream
        return subprocess.run(cmd).returncode
    from medtune.train.stage import train_model

    if int(os.environ.get("RANK", "0")) == 0:
        save_config(cfg, cfg.run_dir / "config.yaml")  # exactly what ran
    train_model(cfg, resume=resume, force=force, log=log)
    return 0


def _visible_gpus() -> int:
    import torch

    return max(torch.cuda.device_count(), 1)
