"""Synthetic predictions frames (two eyes a patient) and the same frame made better."""

import numpy as np
import pandas as pd


def predictions(patients, seed=0, both_eyes_disagree=False, both_eyes_agree=False):
    """A predictions frame of `patients` patients with two eyes each, about 70 % right."""
    rng = np.random.default_rng(seed)
    grades = rng.integers(0, 5, 2 * patients)
    right = rng.random(2 * patients) < 0.7
    if both_eyes_disagree:  # one eye right, the other wrong, for every patient
        right = np.tile([True, False], patients)
    if both_eyes_agree:  # both right or both wrong
        right = np.repeat(right[:patients], 2)
    predicted = np.where(right, grades, (grades + 1 + rng.integers(0, 4, 2 * patients)) % 5)
    probs = np.full((2 * patients, 5), 0.05)
    probs[np.arange(2 * patients), predicted] = 0.8
    frame = pd.DataFrame({"image": [f"{i // 2}_{('left', 'right')[i % 2]}"
                                    for i in range(2 * patients)],
                          "patient": [str(i // 2) for i in range(2 * patients)],
                          "grade": grades, "predicted": predicted})
    frame[[f"p{g}" for g in range(5)]] = probs
    frame["p_referable"] = probs[:, 2:].sum(axis=1) + rng.normal(0, 0.05, 2 * patients)
    return frame


def better(frame, fraction, seed=0):
    """The frame with `fraction` of its wrong answers made right."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    wrong = np.flatnonzero(frame["grade"] != frame["predicted"])
    fixed = rng.choice(wrong, int(fraction * len(wrong)), replace=False)
    frame.loc[fixed, "predicted"] = frame.loc[fixed, "grade"]
    return frame
