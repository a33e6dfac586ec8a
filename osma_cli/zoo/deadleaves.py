"""Dead-leaves images: the zoo's third training domain, made from a seed.

The dead-leaves model (Matheron 1968; Lee, Mumford and Huang 2001) stacks opaque discs
of random colour whose radii follow a power law ``p(r) ~ r**-3`` between ``r_min`` and
``r_max``. It reproduces the scale invariance, occlusions and sharp edges of natural
images, which is why camera makers test texture rendering on dead-leaves charts (ISO
19567-2, IEEE P1858). For the zoo it is a training set that shares nothing with the
photographs: no camera, no lens, no JPEG, no photographed object.

Discs are drawn front to back (each new disc only fills the pixels no earlier disc
covered) until the image is covered, on a canvas twice the size, then averaged 2x2 so
edges are anti-aliased as an optical system would leave them. Each disc gets a colour
(a grey level plus a moderate chroma), a gentle linear shading and, on some discs, a
sinusoidal grating, so the images hold texture as well as flat areas; a little Gaussian
noise is added at the end. Everything comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np

from osma_cli.errors import UsageError

R_MIN = 3.0
"""Smallest disc radius, in output pixels."""
GRATING_SHARE = 0.3
"""Fraction of discs that carry a sinusoidal texture."""
NOISE_SIGMA = 1.5
"""Standard deviation of the final Gaussian noise, in 8-bit levels."""
_MAX_DISCS = 20000


def _radius(rng: np.random.Generator, r_min: float, r_max: float) -> float:
    """Inverse-CDF draw from p(r) ~ r^-3 on [r_min, r_max]."""
    u = rng.random()
    a, b = r_min**-2, r_max**-2
    return float((a - u * (a - b)) ** -0.5)


def _colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(0.05, 0.95)
    direction = rng.normal(size=3)
    direction -= direction.mean()
    norm = np.linalg.norm(direction)
    chroma = direction / norm * rng.uniform(0.0, 0.3) if norm > 0 else np.zeros(3)
    return np.clip(grey + chroma, 0.0, 1.0)


def dead_leaves(size: int, seed: int, *, r_max: float | None = None) -> np.ndarray:
    """A ``(size, size, 3) uint8`` dead-leaves image, the same for the same ``seed``."""
    if size < 4:
        raise UsageError(f"a dead-leaves image needs a size of at least 4, not {size}")
    rng = np.random.default_rng(seed)
    scale = 2
    canvas_size = size * scale
    r_min = R_MIN * scale
    r_max = (r_max if r_max is not None else size / 4) * scale
    canvas = np.zeros((canvas_size, canvas_size, 3), dtype=np.float64)
    free = np.ones((canvas_size, canvas_size), dtype=bool)
    n_free = free.size
    for _ in range(_MAX_DISCS):
        if n_free == 0:
            break
        radius = _radius(rng, r_min, r_max)
        cy, cx = rng.uniform(-radius, canvas_size + radius, size=2)
        colour = _colour(rng)
        slope = rng.normal(0.0, 0.15, size=2) / max(radius, 1.0)
        grating = rng.random() < GRATING_SHARE
        frequency = rng.uniform(0.05, 0.35) / scale
        angle = rng.uniform(0, np.pi)
        amplitude = rng.uniform(0.03, 0.12)
        top, bottom = max(int(cy - radius), 0), min(int(cy + radius) + 1, canvas_size)
        left, right = max(int(cx - radius), 0), min(int(cx + radius) + 1, canvas_size)
        if top >= bottom or left >= right:
            continue
        yy, xx = np.mgrid[top:bottom, left:right].astype(np.float64)
        dy, dx = yy - cy, xx - cx
        mask = (dy * dy + dx * dx <= radius * radius) & free[top:bottom, left:right]
        if not mask.any():
            continue
        shade = slope[0] * dy + slope[1] * dx
        if grating:
            shade = shade + amplitude * np.sin(2 * np.pi * frequency * (dx * np.cos(angle) + dy * np.sin(angle)))
        values = np.clip(colour[None, None, :] + shade[..., None], 0.0, 1.0)
        window = canvas[top:bottom, left:right]
        window[mask] = values[mask]
        free[top:bottom, left:right] &= ~mask
        n_free -= int(mask.sum())
    if n_free:
        canvas[free] = _colour(rng)
    image = canvas.reshape(size, scale, size, scale, 3).mean(axis=(1, 3)) * 255.0
    image += rng.normal(0.0, NOISE_SIGMA, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def dead_leaves_set(n: int, size: int, seed: int) -> list[np.ndarray]:
    """``n`` images, image ``i`` drawn from seed ``(seed, i)``."""
    return [dead_leaves(size, int(np.random.SeedSequence([seed, i]).generate_state(1)[0])) for i in range(n)]
