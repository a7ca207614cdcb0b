"""The one launch decision: `medtune train` and `medtune run` start the same processes for the same flags."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml

from medtune import cli

PORT = ["--master-port", "29555"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
# (launch flags, visible GPUs, the launcher's part of the command written out by hand; None = train in-process)
CASES = {
    "one GPU": ([], 1, None),
    "no GPU": ([], 0, None),
    "every visible GPU": ([], 4, TORCHRUN + ["--nproc_per_node=4", "--nnodes=1", "--node_rank=0",
                                             "--master_addr=127.0.0.1", "--master_port=29555"]),
    "nproc 1 on 4 GPUs": (["--nproc-per-node", "1"], 4, None),
    "two machines": (["--nproc-per-node", "8", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1"], 1,
                     TORCHRUN + ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1",
                                 "--master_port=29555"]),
    "accelerate on one GPU": (["--accelerate-config", "configs/accelerate/fsdp.yaml"], 1,
                              ACCELERATE + ["--config_file", "configs/accelerate/fsdp.yaml", "--num_processes", "1",
                                            "--num_machines", "1", "--machine_rank", "0", "--main_process_ip",
                                            "127.0.0.1", "--main_process_port", "29555"]),
    "accelerate, GPUs by default": (["--accelerate-config", "z.yaml", "--nnodes", "2"], 2,
                                    ACCELERATE + ["--config_file", "z.yaml", "--num_processes", "4", "--num_machines",
                                                  "2", "--machine_rank", "0", "--main_process_ip", "127.0.0.1",
                                                  "--main_process_port", "29555"]),
}


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """Stubs every stage and the launcher; returns what ran: ('launch', cmd) or ('train', cfg) and stage names."""
    calls = []
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(("launch", cmd)) or
                        subprocess.CompletedProcess(cmd, 0))
    import medtune.data
    import medtune.evaluate
    import medtune.report
    import medtune.train.stage

    monkeypatch.setattr(medtune.train.stage, "train_model", lambda cfg, **kw: calls.append(("train", kw)))
    monkeypatch.setattr(medtune.data, "prepare_dataset", lambda cfg, **kw: calls.append(("prepare", kw)))
    monkeypatch.setattr(medtune.evaluate, "evaluate_run", lambda cfg, **kw: calls.append(("evaluate", kw)))
    monkeypatch.setattr(medtune.report, "write_report", lambda run_dir, **kw: calls.append(("report", kw)) or
                        SimpleNamespace(markdown=run_dir / "report.md", html=run_dir / "report.html"))
    return calls


def _config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "data": {"train_files": ["d.jsonl"]}}))
    return path


@pytest.mark.parametrize("case", CASES)
def test_train_and_run_make_the_same_launch_decision(case, recorded, monkeypatch, tmp_path):
    flags, gpus, launcher = CASES[case]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    config = _config(tmp_path)
    expected_train_args = {"train": [str(config)], "run": [str(tmp_path / "run" / "config.yaml")]}
    for command in ("train", "run"):
        recorded.clear()
        assert cli.main([command, str(config), *flags, *PORT]) == 0
        launched = [c for kind, c in recorded if kind == "launch"]
        if launcher is None:
            assert not launched, command
            assert [kind for kind, _ in recorded if kind == "train"] == ["train"], command
        else:
            assert launched == [launcher + ["-m", "medtune", "train", *expected_train_args[command]]], command
            assert not any(kind == "train" for kind, _ in recorded)


def test_run_calls_the_stages_in_the_order_force_names_them(recorded, monkeypatch, tmp_path):
    from medtune.config import load_config
    from medtune.run import run_pipeline

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    logged = []
    run_pipeline(load_config(_config(tmp_path)), force=("train",), log=logged.append)
    # prepare, train, evaluate, report in that order; align only runs with an align: section, which this config has not
    assert [line.strip("\n= ") for line in logged if line.startswith("\n===")] == ["prepare", "train", "evaluate",
                                                                                "report"]
    assert [kind for kind, _ in recorded] == ["prepare", "train", "evaluate", "report"]
    assert [kw["force"] for kind, kw in recorded if kind != "report"] == [False, True, False]
