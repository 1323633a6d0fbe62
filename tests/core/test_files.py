"""Files retino writes: atomically, never through a planted symlink, and what a kill left behind
cleaned on the next start."""

import os

from retino.core.files import atomic_write_text, clear_interrupted_writes


def test_a_symlink_planted_at_the_temp_name_is_never_written_through(tmp_path):
    """The temp name was `.<name>.tmp-<pid>`: a symlink planted there sent the write into its
    victim, and the rename left the target a link to it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out" / "report.md"
    target.parent.mkdir()
    for pid in {os.getpid(), *range(os.getpid() - 2, os.getpid() + 3)}:
        (target.parent / f".report.md.tmp-{pid}").symlink_to(victim)
    atomic_write_text(target, "the report")
    assert victim.read_text() == "precious"
    assert target.read_text() == "the report" and not target.is_symlink()


def test_writes_a_kill_interrupted_are_cleared_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.pt.tmp-abc123").write_bytes(b"half a checkpoint")
    (run / ".hidden-but-ours").write_text("keep")
    atomic_write_text(run / "kept.txt", "kept")
    assert clear_interrupted_writes(run) == 1
    assert sorted(p.name for p in run.iterdir()) == [".hidden-but-ours", "kept.txt"]


def test_a_full_disk_names_the_file_and_the_space_left(tmp_path):
    """torch.save on a full disk said "basic_ios::clear: iostream error": no path, no word of
    space; the temp file of the failed save is removed."""
    import errno

    import pytest

    from retino.core.files import DiskFullError, atomic_write

    def full(tmp):
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DiskFullError, match=r"No space left to write .*last\.pt: [\d.]+ MB free"):
        atomic_write(tmp_path / "last.pt", full)
    assert not any(p.name.startswith(".last.pt") for p in tmp_path.iterdir())


def test_a_save_on_a_small_full_filesystem_says_so(tmp_path):
    """A real full disk: a 1 MB tmpfs where this machine lets the tests mount one."""
    import subprocess

    import pytest
    import torch

    from retino.core.files import DiskFullError
    from retino.training.checkpoint import atomic_torch_save

    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode:
        pytest.skip("this machine does not let the tests mount a small tmpfs")
    try:
        with pytest.raises(DiskFullError, match="No space left to write"):
            atomic_torch_save(mount / "last.pt", {"w": torch.zeros(1_000_000)})
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_written_file_gets_a_plain_files_mode_not_the_temp_files(tmp_path):
    """mkstemp makes its file 0600: every report, CSV and checkpoint became unreadable to the
    group that shares the folder."""
    import stat

    old = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "results.md", "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.md").stat().st_mode) == 0o664
