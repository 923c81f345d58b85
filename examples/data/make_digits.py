"""Write digits.npz: 2000 synthetic 8x8 handwritten-style digit images (200 per class).

This is the small image dataset examples/mlp.py and examples/cnn.py train on. It is
synthetic, not scanned handwriting: each digit 0-9 is a pen-stroke template (polylines on a
unit square), and every sample draws the template with its own random slant, rotation,
scale, shift, stroke width and per-point wobble, rasterises it at 32x32, averages it down to
8x8 and quantises it to 0..16, the format of the UCI/scikit-learn digits (so a model sized for
those fits this). Pixel noise and stray ink make the classes overlap a little, so accuracy
is high but not perfect. The file is deterministic: running this script again writes the same
arrays. Run it with `python examples/data/make_digits.py`.
"""

from __future__ import annotations

import os

import numpy as np

# Strokes in (x, y) with y pointing down, on the unit square; each digit is a list of polylines.
_ARC = np.linspace(0.0, 2.0 * np.pi, 17)
# fmt: off
TEMPLATES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(0.5 + 0.28 * np.sin(a), 0.5 - 0.4 * np.cos(a)) for a in _ARC]],
    1: [[(0.35, 0.3), (0.55, 0.1), (0.55, 0.9)], [(0.35, 0.9), (0.75, 0.9)]],
    2: [[(0.25, 0.3), (0.4, 0.12), (0.62, 0.12), (0.75, 0.3), (0.7, 0.48), (0.25, 0.9),
         (0.78, 0.9)]],
    3: [[(0.25, 0.15), (0.72, 0.15), (0.48, 0.45), (0.7, 0.55), (0.72, 0.78), (0.5, 0.9),
         (0.25, 0.82)]],
    4: [[(0.65, 0.9), (0.65, 0.1), (0.2, 0.62), (0.8, 0.62)]],
    5: [[(0.75, 0.12), (0.3, 0.12), (0.27, 0.45), (0.6, 0.42), (0.75, 0.62), (0.65, 0.85),
         (0.25, 0.88)]],
    6: [[(0.68, 0.12), (0.4, 0.3), (0.28, 0.6), (0.35, 0.85), (0.6, 0.88), (0.72, 0.68),
         (0.55, 0.52), (0.3, 0.6)]],
    7: [[(0.22, 0.12), (0.78, 0.12), (0.45, 0.9)], [(0.35, 0.5), (0.7, 0.5)]],
    8: [[(0.5, 0.48), (0.3, 0.32), (0.38, 0.12), (0.62, 0.12), (0.7, 0.32), (0.5, 0.48),
         (0.27, 0.68), (0.35, 0.9), (0.65, 0.9), (0.73, 0.68), (0.5, 0.48)]],
    9: [[(0.7, 0.4), (0.45, 0.5), (0.28, 0.35), (0.4, 0.12), (0.65, 0.14), (0.7, 0.4),
         (0.62, 0.9)]],
}
# fmt: on

PER_CLASS = 200
SEED = 20240601
FINE = 32  # rasterise at 32x32, then average 4x4 blocks down to 8x8


def _distance_to_segments(points: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Return each point's distance to the nearest segment ((P, 2) points, (S, 2, 2) segments)."""
    start, end = segments[:, 0], segments[:, 1]
    direction = end - start
    length2 = np.maximum((direction**2).sum(axis=1), 1e-12)
    offset = points[:, None, :] - start[None]
    t = np.clip((offset * direction[None]).sum(axis=2) / length2[None], 0.0, 1.0)
    nearest = start[None] + t[..., None] * direction[None]
    return np.sqrt(((points[:, None, :] - nearest) ** 2).sum(axis=2)).min(axis=1)


def draw(digit: int, rng: np.random.Generator) -> np.ndarray:
    """Return one 8x8 uint8 image (0..16) of digit drawn with random variation."""
    angle = rng.normal(0.0, 0.12)
    slant = rng.normal(0.0, 0.18)
    scale = rng.uniform(0.8, 1.1, size=2)
    shift = rng.normal(0.0, 0.05, size=2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, -slant], [0.0, 1.0]])
    transform = rotation @ shear @ np.diag(scale)
    segments = []
    for stroke in TEMPLATES[digit]:
        points = np.asarray(stroke, dtype=np.float64)
        points = points + rng.normal(0.0, 0.025, size=points.shape)
        points = (points - 0.5) @ transform.T + 0.5 + shift
        segments.extend(zip(points[:-1], points[1:], strict=True))
    segments = np.asarray(segments)
    centres = (np.arange(FINE) + 0.5) / FINE
    grid = np.stack(np.meshgrid(centres, centres, indexing="xy"), axis=-1).reshape(-1, 2)
    width = rng.uniform(0.05, 0.09)
    ink = np.clip(1.5 - _distance_to_segments(grid, segments) / width, 0.0, 1.0)
    image = ink.reshape(8, FINE // 8, 8, FINE // 8).mean(axis=(1, 3))
    image = image * rng.uniform(0.8, 1.2) + rng.normal(0.0, 0.06, size=image.shape)
    if rng.random() < 0.3:  # a stray speck of ink
        row, col = rng.integers(0, 8, size=2)
        image[row, col] += rng.uniform(0.3, 0.8)
    return np.clip(np.round(image * 16), 0, 16).astype(np.uint8)


def make(per_class: int = PER_CLASS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Return (images (N, 8, 8) uint8 in 0..16, labels (N,) uint8), shuffled, N = 10 * per_class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    rng.shuffle(labels)
    images = np.stack([draw(int(label), rng) for label in labels])
    return images, labels


def main() -> None:
    """Write digits.npz next to this script."""
    images, labels = make()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")
    np.savez_compressed(path, images=images, labels=labels)
    print(f"wrote {path}: images {images.shape} {images.dtype}, labels {labels.shape}")


if __name__ == "__main__":
    main()
