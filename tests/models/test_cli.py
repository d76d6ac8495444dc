"""The commands' shared habits: atomic writes that leave nothing half-done, with ordinary permissions."""

import os

import pytest

from models.cli import write_atomic


def test_write_atomic_writes_the_whole_file_with_the_umasks_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        write_atomic(str(tmp_path / "report.json"), '{"a": 1}')
        write_atomic(str(tmp_path / "plot.png"), b"\x89PNG")
    finally:
        os.umask(mask)
    assert (tmp_path / "report.json").read_text() == '{"a": 1}' and (tmp_path / "plot.png").read_bytes() == b"\x89PNG"
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "report.json"]


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    path = tmp_path / "strategy.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(str(path), 42)  # neither text nor bytes: fails while writing
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["strategy.json"]
