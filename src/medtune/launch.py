"""Starting `medtune train` on several processes: torchrun for DDP, `accelerate launch` for FSDP/DeepSpeed.

The launched processes run `python -m medtune train ...` again with the launcher's environment
(LOCAL_RANK, WORLD_SIZE), which is how a process knows it must train rather than launch.
"""

from __future__ import annotations

import os
import socket
import sys


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
