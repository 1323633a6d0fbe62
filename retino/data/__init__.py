"""Data, in two parts: prepare/ (offline: a source read, checked and written once as a cache in
the lab's layout; no torch, so that its worker processes start fast) and load/ (the Dataset and
loaders that training and evaluation read it with), over what both share: the layout
(layout.py) and the patient-level split (split.py). load/ may import prepare/, never the
reverse (pyproject.toml's import contracts)."""
