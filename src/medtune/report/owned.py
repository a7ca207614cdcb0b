"""Which report files medtune wrote: report_files.json beside the report records each file and its sha256.

A rerun replaces or removes only files listed there whose bytes are still what the report wrote; a file
the user wrote or edited (report.md, report.html, plots/*.png) is never overwritten or deleted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medtune.errors import UserError

RECORD = "report_files.json"


def _sha256(path: Path) -> str:
    # Not rundir.sha256_file: that one caches by path, and report files change between calls.
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _report_path(rel) -> bool:
    """A name the report writes (a record naming anything else is not trusted with it)."""
    return isinstance(rel, str) and (rel in ("report.md", "report.html")
                                     or (rel.startswith("plots/") and "/" not in rel[6:] and rel.endswith(".png")))


class OwnedFiles:
    """The report's own files in out_dir: what an earlier report wrote, and what this one writes."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.written: dict[str, str] = {}
        record = out_dir / RECORD
        try:
            recorded = json.loads(record.read_text(encoding="utf-8"))["files"] if record.exists() else {}
            if not isinstance(recorded, dict):
                raise TypeError
        except (OSError, ValueError, TypeError, KeyError):
            raise UserError(f"{record}: exists and is not the record medtune report keeps of its files; move it "
                            "away or give another --output DIR") from None
        # Only entries whose file still has the recorded bytes are ours; an edited file is the user's now.
        self.earlier = {rel: h for rel, h in recorded.items() if _report_path(rel) and (out_dir / rel).is_file()
                        and _sha256(out_dir / rel) == h}

    def claim(self, rel: str) -> Path:
        """The path to write `rel` to, after checking that no file medtune did not write is there."""
        path = self.out_dir / rel
        if (path.exists() or path.is_symlink()) and rel not in self.earlier and rel not in self.written:
            raise UserError(f"{path}: exists and was not written by medtune report (it is not listed, unchanged, "
                            f"in {self.out_dir / RECORD}); move it away or give another --output DIR")
        return path

    def wrote(self, rel: str) -> None:
        self.written[rel] = _sha256(self.out_dir / rel)

    def finish(self) -> None:
        """Remove the earlier report's files this one did not rewrite (stale plots), then save the record."""
        stale = self.earlier.keys() - self.written.keys()
        for rel in stale:
            (self.out_dir / rel).unlink(missing_ok=True)
        plots = self.out_dir / "plots"
        if stale and plots.is_dir() and not any(plots.iterdir()):
            plots.rmdir()
        self.earlier = {}
        self.save()

    def save(self) -> None:
        """Record the files that are ours (also after a failure halfway: what was written is ours)."""
        files = {**self.earlier, **self.written}
        if not files and not (self.out_dir / RECORD).exists():
            return
        (self.out_dir / RECORD).write_text(json.dumps({"files": dict(sorted(files.items()))}, indent=2) + "\n",
                                           encoding="utf-8")
