"""Duplicates by content: the same photograph under two names, found from its pixels.

A fundus is a bright disc on black, so whole-frame perceptual hashes call most pairs of fundus
photographs alike. The fingerprint here looks only at what tells two retinas apart, their vessels
and lesions:

1. the field of view's circle (fitted to its rim, so a copy cropped or padded differently, or
   resized, lands on the same square) is resampled to FIELD_SIDE x FIELD_SIDE;
2. its green channel (where vessels show best) is band-passed: the local mean over a few pixels
   is subtracted inside the field, which removes the camera's brightness, vignetting and the
   disc's rim, and leaves the vessel tree;
3. the band is averaged over a GRID x GRID lattice; the cells inside the inner disc, each
   above or below their median, are the fingerprint's bits.

Pairs whose bits differ in at most CANDIDATE_SHARE of them are candidates; a candidate is one
photograph when the band-passed fields correlate above SAME_PHOTOGRAPH at the best of a few small
shifts, and a near-duplicate above SIMILAR (another capture of the same eye, or an edited copy).
Measured on 120 of IDRiD's photographs and copies of 25 of them (resized to half or to a 128 px
square, re-encoded at JPEG quality 50, brightened by 25 %, darkened by 30 %, cropped by 5 % on each
side): copies correlate at 0.73 or more and differ in at most 70 of 284 bits; two different
photographs differ in 84 bits or more and correlate at 0.33 at most. On all 413 IDRiD training
photographs this finds its five byte-identical pairs and one second capture (IDRiD_013 and _397),
and nothing among the 1,250 demo photographs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from retino.data.prepare.preprocess import MAX_MEGAPIXELS, decode_for_size, inspect_image
from retino.data.prepare.quality import disc_circle, field_of_view

# Bump when a change below changes the bits or the fields: surveys of older ones are redone.
FINGERPRINT_VERSION = 1
FIELD_SIDE = 128  # px across the field of view's circle: a large vessel is still ~2 px wide
GRID = 24  # cells across it whose mean band gives a bit
BAND_SIGMA = 4.0  # px at FIELD_SIDE: the local mean subtracted (vessels are narrower)
BAND_CLIP = 3.0  # robust spreads: the band's largest values, kept from dominating
MIN_RADIUS = 0.05  # of the frame's shorter side: a field's smallest radius taken
INNER = 0.85  # of the radius: the rim (a copy's crop, the camera's mask) is left out
CELLS_INSIDE = 0.8  # of the radius: the lattice cells that give bits
WORKING_SIDE = 256  # px: a photograph's longer side is first reduced to this (area averaging)
ALIGNMENT = 2  # px at FIELD_SIDE: shifts tried when two candidates' pixels are compared
# of the bits differing, at most: compared on pixels (76 of 284: copies measured up to 70 apart,
# different photographs from 84)
CANDIDATE_SHARE = 0.27
SAME_PHOTOGRAPH = 0.7  # correlation of the band-passed fields: one photograph
SIMILAR = 0.5  # ... a near-duplicate (another capture of the eye, or an edited copy)
FIELDS_KEPT = 2048  # decoded fields kept while candidates are checked (80 KB each)
# fingerprints compared against as many others per step: about 40 MB of temporaries
_ROWS_AT_ONCE, _COLUMNS_AT_ONCE = 64, 16384


def _disc(side: int, share: float) -> np.ndarray:
    """A (side, side) boolean mask of the centred disc of share x the half side."""
    yy, xx = np.mgrid[:side, :side]
    centre = (side - 1) / 2
    return np.hypot(xx - centre, yy - centre) < share * side / 2


log = logging.getLogger(__name__)
_INNER_DISC = _disc(FIELD_SIDE, INNER).astype(np.float32)
_BIT_CELLS = _disc(GRID, CELLS_INSIDE)
BITS = int(_BIT_CELLS.sum())


@dataclass(frozen=True)
class View:
    """A photograph reduced to WORKING_SIDE at most (BGR), its field of view (bool mask) and
    the field's circle (centre x, centre y, radius; px of the reduced image)."""

    image: np.ndarray
    mask: np.ndarray
    circle: tuple[float, float, float]


def working_view(bgr: np.ndarray) -> View:
    """The photograph reduced (area averaging) with its field of view and circle."""
    scale = WORKING_SIDE / max(bgr.shape[:2])
    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    mask = field_of_view(np.ascontiguousarray(bgr[:, :, ::-1]))
    return View(bgr, mask, disc_circle(mask) or _box_circle(mask))


@dataclass(frozen=True)
class Field:
    """A photograph's field of view on the standard square: its band-passed green (unit
    variance inside the field) and where the field is, both (FIELD_SIDE, FIELD_SIDE)."""

    band: np.ndarray
    inside: np.ndarray


def normalised_field(view: View) -> Field:
    """The view's field of view, band-passed, on the standard square (see module)."""
    cx, cy, radius = view.circle
    # a speck of a field (no fundus) would make the square a magnifier of a few pixels
    radius = max(radius, MIN_RADIUS * min(view.mask.shape))
    to_side = FIELD_SIDE / (2 * radius)
    green = cv2.resize(view.image[:, :, 1], None, fx=to_side, fy=to_side,
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    lit = cv2.resize(view.mask.astype(np.float32), None, fx=to_side, fy=to_side,
                     interpolation=cv2.INTER_AREA)
    shift = np.float32([[1, 0, FIELD_SIDE / 2 - cx * to_side],
                        [0, 1, FIELD_SIDE / 2 - cy * to_side]])
    green = cv2.warpAffine(green, shift, (FIELD_SIDE, FIELD_SIDE))
    inside = (cv2.warpAffine(lit, shift, (FIELD_SIDE, FIELD_SIDE)) > 0.5) * _INNER_DISC
    # the local mean of the field alone (normalised convolution): the black outside never
    # darkens the rim's neighbourhood into a ring every photograph shares
    local = (cv2.GaussianBlur(green * inside, (0, 0), BAND_SIGMA)
             / np.maximum(cv2.GaussianBlur(inside, (0, 0), BAND_SIGMA), 1e-3))
    band = (green - local) * inside
    # In units of its robust spread, clipped: the optic disc's bright rim, where a brightened
    # copy saturates, would otherwise outweigh the whole vessel tree.
    values = band[inside > 0]
    spread = 1.4826 * float(np.median(np.abs(values - np.median(values)))) if values.size > 10 \
        else 1.0
    return Field(np.clip(band / max(spread, 1e-3), -BAND_CLIP, BAND_CLIP), inside > 0)


def _box_circle(mask: np.ndarray) -> tuple[float, float, float]:
    """The circle of the field's bounding box (the whole frame without a field): for a
    photograph whose rim the frame cuts all round."""
    if not mask.any():
        h, w = mask.shape
        return w / 2, h / 2, min(h, w) / 2
    left, top, width, height = cv2.boundingRect(mask.astype(np.uint8))
    return left + width / 2, top + height / 2, max(width, height) / 2


def fingerprint(field: Field) -> np.ndarray:
    """The field's BITS bits (bool): each lattice cell's mean band above the cells' median."""
    cells = cv2.resize(field.band, (GRID, GRID), interpolation=cv2.INTER_AREA)[_BIT_CELLS]
    return cells > np.median(cells)


def similarity(a: Field, b: Field) -> float:
    """The correlation of two fields' band-passed pixels where both have a field, at the
    best of the small shifts that a circle fitted to a low-resolution or re-cropped copy's
    rim can be off by (ALIGNMENT px either way): 1 for one photograph, about 0 for two
    retinas (0 when they share too little field)."""
    return max(_correlation(a, b, dx, dy) for dx in range(-ALIGNMENT, ALIGNMENT + 1)
               for dy in range(-ALIGNMENT, ALIGNMENT + 1))


def _correlation(a: Field, b: Field, dx: int, dy: int) -> float:
    """The correlation with b shifted by (dx, dy) px."""
    shifted_band = np.roll(b.band, (dy, dx), axis=(0, 1))
    both = a.inside & np.roll(b.inside, (dy, dx), axis=(0, 1))
    if both.sum() < 50:
        return 0.0
    x, y = a.band[both], shifted_band[both]
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-9))


def packed(bits: np.ndarray) -> np.ndarray:
    """(N, BITS) bools as (N, words) uint64, for fast Hamming distances."""
    as_bytes = np.packbits(np.atleast_2d(bits), axis=1)
    padding = (-as_bytes.shape[1]) % 8
    return np.ascontiguousarray(np.pad(as_bytes, ((0, 0), (0, padding)))).view(np.uint64)


def candidate_pairs(bits: np.ndarray,
                    share: float = CANDIDATE_SHARE) -> Iterator[tuple[int, int, int]]:
    """(i, j, differing bits) for i < j whose fingerprints differ in at most share of BITS:
    every pair compared, a block of rows at a time (35,000 photographs: about 25 s)."""
    words, limit = packed(bits), int(share * bits.shape[1])
    for start in range(0, len(words), _ROWS_AT_ONCE):
        for i, j, distance in _close(words[start:start + _ROWS_AT_ONCE], words[start:], limit):
            if j > i:  # the rest starts at the block's first row: j indexes from there
                yield start + i, start + j, distance


def candidate_pairs_between(first: np.ndarray, second: np.ndarray,
                            share: float = CANDIDATE_SHARE) -> Iterator[tuple[int, int, int]]:
    """(i, j, differing bits) for row i of first and row j of second whose fingerprints differ
    in at most share of BITS (a test split against a training split: only those pairs)."""
    words, others, limit = packed(first), packed(second), int(share * first.shape[1])
    for start in range(0, len(words), _ROWS_AT_ONCE):
        for i, j, distance in _close(words[start:start + _ROWS_AT_ONCE], others, limit):
            yield start + i, j, distance


def _close(block: np.ndarray, others: np.ndarray,
           limit: int) -> Iterator[tuple[int, int, int]]:
    """(row of block, row of others, differing bits) at most limit apart."""
    for start in range(0, len(others), _COLUMNS_AT_ONCE):
        part = others[start:start + _COLUMNS_AT_ONCE]
        distance = np.bitwise_count(block[:, None, :] ^ part[None, :, :]).sum(axis=2)
        for i, j in zip(*np.nonzero(distance <= limit), strict=True):
            yield int(i), start + int(j), int(distance[i, j])


@dataclass(frozen=True)
class Pair:
    """Two photographs (indices into the list surveyed) that look alike, and how alike."""

    first: int
    second: int
    differing_bits: int
    similarity: float

    @property
    def same_photograph(self) -> bool:
        return self.similarity >= SAME_PHOTOGRAPH


def alike_pairs(candidates: Iterable[tuple[int, int, int]],
                read_field: Callable[[int], Field]) -> list[Pair]:
    """The candidate pairs (candidate_pairs) whose pixels agree at least SIMILAR; read_field(i)
    gives photograph i's Field (decoded again: only candidates are, a few per thousand)."""
    field = lru_cache(maxsize=FIELDS_KEPT)(read_field)  # candidates come in row order
    pairs, compared = [], 0
    for i, j, distance in candidates:
        compared += 1
        score = similarity(field(i), field(j))
        if score >= SIMILAR:
            pairs.append(Pair(i, j, distance, score))
    log.info("Compared %d candidate pair(s) on their pixels: %d alike.", compared, len(pairs))
    return pairs


def groups_of(count: int, pairs: Sequence[Pair]) -> list[list[int]]:
    """Groups of one photograph (two or more indices, each sorted; the groups by their first
    index): the same_photograph pairs joined transitively."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in pairs:
        if pair.same_photograph:
            parent[root(pair.second)] = root(pair.first)
    members: dict[int, list[int]] = {}
    for i in range(count):
        members.setdefault(root(i), []).append(i)
    return sorted((group for group in members.values() if len(group) > 1), key=lambda g: g[0])


def bits_text(bits: np.ndarray) -> str:
    """A fingerprint as hex (for a table), and back with bits_from_text."""
    return np.packbits(bits).tobytes().hex()


def bits_from_text(text: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:BITS].astype(bool)


def read_view(path: Path, max_megapixels: float = MAX_MEGAPIXELS) -> View:
    """A photograph file's working view, decoded reduced where it is large (JPEG's DCT
    scaling); BadImage when it cannot be read (see inspect_image)."""
    width, height, _ = inspect_image(Path(path), max_megapixels)
    return decode_view(path, width, height)


def decode_view(path: Path, width: int, height: int) -> View:
    """The working view of a photograph whose header inspect_image has already read."""
    shorter = min(width, height)
    needed = min(shorter, WORKING_SIDE * shorter // max(width, height))  # at WORKING_SIDE
    return working_view(decode_for_size(Path(path), width, height, needed))
