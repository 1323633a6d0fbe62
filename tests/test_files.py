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
