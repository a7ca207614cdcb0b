"""The run directory: small helpers every stage uses to hand off through files.

Writes are atomic (temp file, then rename), so a killed stage never leaves a half-written file that
a later stage would trust. A stage is current when its manifest records the fingerprint of its
inputs and its outputs exist; StageRun is that protocol for the stages that train (train, align).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtune import __version__


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened with open(): the file gets the permissions any other file would (the umask applies),
    # which tempfile.mkstemp's 0600 would not.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """One JSON object per line, written atomically like write_json."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def read_json(path: str | Path, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_current(manifest: str | Path, expected_fingerprint: str, *outputs: str | Path) -> bool:
    """True when `manifest` records `expected_fingerprint` and every output path exists."""
    recorded = read_json(manifest) or {}
    return recorded.get("fingerprint") == expected_fingerprint and all(Path(p).exists() for p in outputs)


def file_identity(path: str | Path) -> dict:
    path = Path(path).resolve()
    return {"path": str(path), "sha256": sha256_file(path)}


def data_identity(path: str | Path) -> dict:
    """A benchmark file by its hash; a directory of them by every file's hash."""
    path = Path(path)
    if path.is_dir():
        return {"dir": str(path.resolve()), "files": {f.name: sha256_file(f.resolve()) for f in sorted(path.iterdir())
                                                      if f.is_file()}}
    return file_identity(path)


def sha256_file(path: Path) -> str:
    # Cached by size and modification time too: a stage that rewrites a file (compare/answers.jsonl) must not
    # hand a later step of the same process the old file's hash.
    st = Path(path).stat()
    return _sha256_file(path, st.st_size, st.st_mtime_ns)


@functools.cache
def _sha256_file(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- the stage protocol: manifest, skip, clearing ------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class StageRun:
    """How a stage that writes a directory of its own (train: the run directory, align: align/) keeps it.

    Its manifest records the fingerprint of the stage's inputs and a status: `running` from the moment it
    writes anything, then `completed` (with `finished`) or `failed` (with `error`). The stage is current when
    the manifest says completed for the same fingerprint and its result file exists. Starting over removes
    only what the stage itself writes: `outputs`, `strays` and `checkpoint-<step>/`; anything else in the
    directory (data/, config.yaml, a user's notes) stays.
    """

    stage: str  # the name messages and errors use: "train" | "align"
    directory: Path
    manifest_name: str
    fingerprint: str
    outputs: tuple[str, ...]  # files or directories the stage writes
    strays: tuple[str, ...] = ()  # written on the way (by the libraries it calls) and removed once it completes

    @property
    def manifest(self) -> Path:
        return self.directory / self.manifest_name

    def recorded(self) -> dict:
        return read_json(self.manifest) or {}

    def is_current(self, result: str) -> bool:
        """Completed for this fingerprint, and `result` (the file later stages read) is still there."""
        recorded = self.recorded()
        return (recorded.get("fingerprint") == self.fingerprint and recorded.get("status") == "completed"
                and (self.directory / result).exists())

    def clear(self) -> None:
        checkpoints = [d.name for d in self.directory.glob("checkpoint-*")
                       if d.is_dir() and d.name.removeprefix("checkpoint-").isdigit()]
        self._remove(*checkpoints, *self.outputs, *self.strays)

    def start(self) -> None:
        write_json(self.manifest, {"fingerprint": self.fingerprint, "status": "running",
                                   "medtune_version": __version__, "started": _now()})

    def fail(self, error: str) -> None:
        write_json(self.manifest, {**self.recorded(), "status": "failed", "error": error})

    def complete(self) -> None:
        """Last: a stage killed before this point is not complete."""
        self._remove(*self.strays)
        write_json(self.manifest, {**self.recorded(), "status": "completed", "finished": _now()})

    def _remove(self, *names: str) -> None:
        for name in names:
            path = self.directory / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
