"""The project itself: stage layout, install, docs, bench scripts, the GPU check."""
