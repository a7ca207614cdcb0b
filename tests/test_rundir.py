"""rundir's atomic writers: files get the permissions the process's umask gives any file, importing the module
changes nothing, and a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from medtune.rundir import read_json, write_json, write_text


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
