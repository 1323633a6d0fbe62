"""End to end: run.py and whole studies in subprocesses, as a user runs them."""
