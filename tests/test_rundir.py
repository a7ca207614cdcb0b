"""rundir's atomic writers: files get the permissions the process's umask gives any file, importing the module
changes nothing, and a failed write leaves the old file and no temporary file behind. StageRun: the manifest,
skip and clearing protocol of the training stages."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from medtune.rundir import StageRun, read_json, write_json, write_text


def test_import_leaves_the_umask_alone_and_files_follow_it(tmp_path):
    # In a fresh process: the umask set before the import is still in force after it, and a written file
    # has 0o666 minus that umask, as open() would give it.
    code = ("import os, stat, sys; os.umask(0o027); import medtune.rundir as r; "
            "assert os.umask(0o027) == 0o027, 'import changed the umask'; "
            "r.write_text(sys.argv[1], 'x'); print(oct(stat.S_IMODE(os.stat(sys.argv[1]).st_mode)))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.txt")], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == oct(0o640)


def test_written_file_has_the_umask_permissions_here(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    write_json(tmp_path / "a" / "b.json", {"k": "中文"})
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b.json").st_mode) == 0o666 & ~umask
    assert read_json(tmp_path / "a" / "b.json") == {"k": "中文"}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "x.txt"
    write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        write_text(path, "new \ud800")  # a lone surrogate cannot be written as UTF-8
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


# --- StageRun: the protocol train and align follow in their directories ---------------------------------------

TRAINER_LIKE = dict(outputs=("adapter_model.safetensors", "metrics.jsonl"), strays=("training_args.bin", "ref"))


def test_a_stage_is_current_only_once_completed_for_the_same_fingerprint_with_its_result(tmp_path):
    run = StageRun("train", tmp_path, "train_manifest.json", "fp-1", **TRAINER_LIKE)
    assert not run.is_current("adapter_model.safetensors")  # never ran
    run.start()
    manifest = read_json(tmp_path / "train_manifest.json")
    assert manifest["fingerprint"] == "fp-1" and manifest["status"] == "running" and "started" in manifest
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w")
    assert not run.is_current("adapter_model.safetensors")  # still running (or killed)
    run.complete()
    manifest = read_json(tmp_path / "train_manifest.json")
    assert manifest["status"] == "completed" and "finished" in manifest and manifest["started"]
    assert run.is_current("adapter_model.safetensors")
    changed = StageRun("train", tmp_path, "train_manifest.json", "fp-2", **TRAINER_LIKE)
    assert not changed.is_current("adapter_model.safetensors")  # new inputs: rerun
    (tmp_path / "adapter_model.safetensors").unlink()
    assert not run.is_current("adapter_model.safetensors")  # the result is gone: rerun


def test_a_failed_stage_records_its_error_and_is_not_current(tmp_path):
    run = StageRun("align", tmp_path / "align", "align_manifest.json", "fp-1", **TRAINER_LIKE)
    run.start()
    (tmp_path / "align" / "adapter_model.safetensors").write_bytes(b"w")
    run.fail("step 3: the logged loss is nan")
    manifest = read_json(tmp_path / "align" / "align_manifest.json")
    assert manifest["status"] == "failed" and manifest["error"] == "step 3: the logged loss is nan"
    assert manifest["fingerprint"] == "fp-1" and "started" in manifest and "finished" not in manifest
    assert not run.is_current("adapter_model.safetensors")


def test_clearing_removes_only_what_the_stage_writes(tmp_path):
    run = StageRun("train", tmp_path, "train_manifest.json", "fp-1", **TRAINER_LIKE)
    written = ["adapter_model.safetensors", "metrics.jsonl", "training_args.bin", "ref/adapter_model.safetensors",
               "checkpoint-2/optimizer.pt", "checkpoint-10/medtune-complete.json"]
    users = ["notes.txt", "config.yaml", "data/train/x.arrow", "checkpoint-best/model.bin", "checkpoint-3.txt",
             "align/metrics.jsonl", "adapter_model.safetensors.bak"]
    for name in written + users:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    run.clear()
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(users)
    assert not (tmp_path / "ref").exists() and not (tmp_path / "checkpoint-2").exists()


def test_completing_removes_the_strays_and_keeps_the_outputs(tmp_path):
    run = StageRun("train", tmp_path, "train_manifest.json", "fp-1", **TRAINER_LIKE)
    run.start()
    for name in ("adapter_model.safetensors", "metrics.jsonl", "training_args.bin", "ref/adapter_config.json",
                 "checkpoint-2/optimizer.pt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    run.complete()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_model.safetensors", "checkpoint-2",
                                                          "metrics.jsonl", "train_manifest.json"]
