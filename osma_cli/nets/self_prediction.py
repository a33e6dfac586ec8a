"""Forensic self-description: least-squares linear prediction of a pixel from its neighbourhood.

Nguyen, Azizpour & Stamm (CVPR 2025) describe an image by how its own forensic residuals
predict themselves: the coefficients of one linear predictor per image, fitted by least
squares, are a training-free feature. This module is the numerical core (torch, float64,
batched over images, the same ops on CPU and CUDA).

Notation. ``x_k`` is residual channel k of an image (K channels), ``O = (o_1, ..., o_M)`` a list
of offsets ``(dy, dx)`` that excludes ``(0, 0)``, and V the valid region: the pixels p with
p + o inside the image for every o in O. No padding, ever: padding (zeros, mirrors,
replicated edges) invents pixel relations that no camera or generator produced, and a
predictor fitted on them learns the padding.

Normal equations (sums over p in V, never means, so that they add over images, image
halves and scales):

- ``mode="per-channel"``: for each channel k, target ``y_p = x_k(p)``, features
  ``a_p = (x_k(p + o_1), ..., x_k(p + o_M))``; ``G_k = sum_p a_p a_p^T`` (M x M),
  ``h_k = sum_p a_p y_p`` (M).
- ``mode="joint"`` (the paper): target ``y_p = sum_k x_k(p)``, features all K channels at
  ``p + o_m``, feature index ``k * M + m``; ``G`` is (KM x KM), ``h`` is (KM).

Predictor. With ``D = groups * M`` unknowns, ``t = trace(G) / D`` and
``lambda = ridge * t + tiny`` (``tiny = 1e-12 * t``, which keeps a singular G, e.g. a
constant image with ``ridge = 0``, invertible), the predictor minimises
``sum_p (y_p - w . a_p)^2 + lambda |w|^2``:

- unconstrained: ``w = (G + lambda I)^-1 h``;
- constrained (each group's M coefficients sum to 1, one group per channel): the KKT system
  ``[[G + lambda I, E^T], [E, 0]] [w; mu] = [h; 1]``, E (groups x D) with ones on group g's
  columns in row g.

Both answers are invariant to scaling the image (lambda scales with G). A flat input
(``G = 0``: zero residuals, which is what a constant image gives after prediction-error
filters, or no valid pixel at all) has the documented answer ``w = 1/M`` per group
(constrained) or ``w = 0`` (unconstrained), returned exactly; nothing is ever NaN.

Scales. Scale 0 is the input; scale s+1 is scale s down-sampled 2x by 2x2 average pooling
(sizes floored). Each scale has its own valid region (the neighbourhood is B x B pixels *of
that scale*); a scale too small for it has no valid pixel and contributes ``G = 0, h = 0,
n = 0``: nothing to a ``scale_mode="joint"`` sum (the paper: normal equations summed over
scales, one solve), the flat answer to its block of a ``scale_mode="separate"`` descriptor.

Algorithm (why it is fast). Let the bounding box of O and the centre be By x Bx. The Gram
matrix of all box values ``g[(k, A, j), (l, B, m)] = sum_{p in V} x_k(p + (A, j)) x_l(p + (B, m))``
(box coordinates) contains G and h; nothing of size (K By Bx x pixels) is ever built.

- Rows: shifting V down one row swaps one image row for another, so
  ``g[A + 1, B + 1] = g[A, B] - R(top row) + R(bottom row)``, R a product of two rows (O(W)).
  Only the first box row ``g[(k, 0, j), :]`` is a sum over all pixels.
- First box row: in flat row-major indices it is a lag sum ``sum_q x_k[q] x_l[q + d]``
  (d = B W + m - j), all lags at once from one FFT correlation per channel pair (exact:
  the FFT is long enough that no index wraps), minus the O(Bx H) terms of pixels whose
  window wraps round a row end and of the window start moving by j (small matrix products
  of column strips).

Cost per image and scale: K (per-channel) or K^2 (joint) FFT correlations of H W points
plus O(K^2 By Bx^2 H) for the corrections, independent of the block's area in the FFT part.
Memory: O(K H W) for the spectra, the box Gram itself (K By Bx)^2, and strips bounded by
``_CHUNK_ELEMENTS`` per group of images. G is symmetrised ((G + G^T) / 2) before it is
returned, so the solves see an exactly symmetric matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from osma_cli.errors import UsageError

MODES = ("per-channel", "joint")
SCALE_MODES = ("joint", "separate")

_TINY = 1e-12
"""Diagonal loading relative to trace(G)/D, on top of ``ridge``: keeps a singular G invertible."""

_CHUNK_ELEMENTS = 1 << 22
"""Float64 elements (32 MiB) of FFT buffers and edge strips per group of images (one image at least)."""


def neighbourhood_offsets(block: int) -> list[tuple[int, int]]:
    """Offsets ``(dy, dx)`` of a block x block square, centre excluded, row-major."""
    _check_block(block)
    r = block // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)]


def masked_offsets(mask: Tensor) -> list[tuple[int, int]]:
    """Offsets of the True cells of an odd square boolean support, relative to its centre, row-major.

    Lets filters with different supports (a cross, a ring, a causal half-plane) be fitted with
    the same normal equations.
    """
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.ndim != 2:
        raise UsageError(
            "a support mask must be a 2-D boolean tensor",
            hint="build it with torch.zeros(S, S, dtype=torch.bool) and set the support to True",
        )
    size = mask.shape[0]
    if mask.shape[1] != size or size % 2 == 0 or size < 3:
        raise UsageError(f"a support mask must be an odd square of side >= 3, got {tuple(mask.shape)}")
    r = size // 2
    cells = mask.detach().cpu().tolist()
    if cells[r][r]:
        raise UsageError("a support mask must exclude its centre (the pixel being predicted)")
    offsets = [(i - r, j - r) for i in range(size) for j in range(size) if cells[i][j]]
    if not offsets:
        raise UsageError("a support mask must select at least one neighbour")
    return offsets


@torch.no_grad()
def normal_equations(
    channels: Tensor, offsets: Sequence[tuple[int, int]], *, mode: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Sums ``G = sum a a^T``, ``h = sum a y`` and the pixel count n over the valid region.

    ``channels`` is (B, K, H, W) float64. Returns G (B, K, M, M), h (B, K, M) for
    ``mode="per-channel"``, G (B, KM, KM), h (B, KM) for ``mode="joint"``, and n (B,) int64
    (the same for every image of the batch). Sums, not means, so results add up.
    """
    _check_channels(channels)
    offs = _check_offsets(offsets)
    _check_choice("mode", mode, MODES)
    b, k, h, w = channels.shape
    m = len(offs)
    ys = [dy for dy, _ in offs] + [0]
    xs = [dx for _, dx in offs] + [0]
    top, left = min(ys), min(xs)
    box_h, box_w = max(ys) - top + 1, max(xs) - left + 1
    valid_h, valid_w = h - box_h + 1, w - box_w + 1
    count = max(valid_h, 0) * max(valid_w, 0)
    n = torch.full((b,), count, dtype=torch.int64, device=channels.device)
    d = m if mode == "per-channel" else k * m
    lead = (b, k) if mode == "per-channel" else (b,)
    if count == 0:
        return channels.new_zeros(*lead, d, d), channels.new_zeros(*lead, d), n

    box = box_h * box_w
    pos = [(dy - top) * box_w + (dx - left) for dy, dx in offs]
    centre = (-top) * box_w + (-left)
    if mode == "per-channel":
        g = _box_gram(channels.reshape(b * k, 1, h, w), box_h, box_w).view(b, k, box, box)
        gram = _take(_take(g, 3, pos), 2, pos)
        rhs = _take(g[:, :, centre], 2, pos)
    else:
        g = _box_gram(channels, box_h, box_w).view(b, k, box, k, box)
        gram = _take(_take(g, 4, pos), 2, pos).reshape(b, d, d)
        rhs = _take(g[:, :, centre], 3, pos).sum(dim=1).reshape(b, d)
    gram = 0.5 * (gram + gram.transpose(-1, -2))
    if not bool(torch.isfinite(gram.sum() + rhs.sum())):
        raise UsageError("channels contain NaN or infinite values (or sums of squares overflow)")
    return gram, rhs, n


@torch.no_grad()
def solve_predictor(G: Tensor, h: Tensor, n: Tensor, *, groups: int, constrained: bool, ridge: float = 1e-6) -> Tensor:
    """Batched solve of the regularised normal equations; returns w (..., D), float64.

    ``G`` (..., D, D), ``h`` (..., D), ``n`` pixel counts whose shape is a leading part of the
    batch shape ``...`` (e.g. (B,) for G (B, K, M, M)). ``D = groups * M``; ``constrained``
    makes each group's M coefficients sum to 1. Batches with ``n = 0`` or ``G = 0`` get the
    flat answer (1/M per coefficient constrained, 0 unconstrained) exactly.
    """
    d = _check_system(G, h, n, groups=groups, ridge=ridge)
    m = d // groups
    batch = G.shape[:-2]
    counts = n.reshape(n.shape + (1,) * (len(batch) - n.ndim)).expand(batch)
    t = torch.diagonal(G, dim1=-2, dim2=-1).sum(dim=-1) / d
    flat = (t <= 0) | (counts == 0)
    scale = torch.where(flat, torch.ones_like(t), t)
    eye = torch.eye(d, dtype=G.dtype, device=G.device)
    a = G / scale[..., None, None] + (ridge + _TINY) * eye
    rhs = h / scale[..., None]
    try:
        if constrained:
            e = torch.repeat_interleave(torch.eye(groups, dtype=G.dtype, device=G.device), m, dim=1)
            kkt = G.new_zeros(*batch, d + groups, d + groups)
            kkt[..., :d, :d] = a
            kkt[..., :d, d:] = e.T
            kkt[..., d:, :d] = e
            full_rhs = torch.cat([rhs, rhs.new_ones(*batch, groups)], dim=-1)
            w = torch.linalg.solve(kkt, full_rhs)[..., :d]
        else:
            w = torch.linalg.solve(a, rhs)
    except torch.linalg.LinAlgError as exc:
        raise UsageError(
            "the normal equations are singular", hint="G must be a sum of outer products a a^T (positive semi-definite)"
        ) from exc
    flat_answer = torch.full_like(w, 1.0 / m) if constrained else torch.zeros_like(w)
    return torch.where(flat[..., None], flat_answer, w)


@torch.no_grad()
def self_description(
    channels: Tensor,
    *,
    block: int = 11,
    mode: str = "joint",
    constrained: bool = True,
    scales: int = 3,
    scale_mode: str = "joint",
    ridge: float = 1e-6,
) -> Tensor:
    """The forensic self-description (B, D_total) of each image's residual channels (B, K, H, W).

    The defaults are the paper's: 11x11 neighbourhoods, one joint predictor of the channel sum
    with one sum-to-one constraint per channel, normal equations summed over 3 scales.
    Layout: scale-major (``scale_mode="separate"``), then channel-major (k * M + m) in both
    modes. See ``descriptor_dim``.
    """
    _check_channels(channels)
    _check_choice("mode", mode, MODES)
    _check_choice("scale_mode", scale_mode, SCALE_MODES)
    _check_scales(scales)
    _check_ridge(ridge)
    offsets = neighbourhood_offsets(block)
    b, k = channels.shape[:2]
    groups = k if mode == "joint" else 1

    def solve(gram: Tensor, rhs: Tensor, count: Tensor) -> Tensor:
        w = solve_predictor(gram, rhs, count, groups=groups, constrained=constrained, ridge=ridge)
        return w.reshape(b, -1)

    level = channels
    total: tuple[Tensor, Tensor, Tensor] | None = None
    parts: list[Tensor] = []
    for s in range(scales):
        if s:
            level = _downsample(level)
        gram, rhs, count = normal_equations(level, offsets, mode=mode)
        if scale_mode == "separate":
            parts.append(solve(gram, rhs, count))
        elif total is None:
            total = (gram, rhs, count)
        else:
            total = (total[0] + gram, total[1] + rhs, total[2] + count)
    if total is not None:
        parts.append(solve(*total))
    return torch.cat(parts, dim=1)


def descriptor_dim(
    n_channels: int, *, block: int = 11, mode: str = "joint", scales: int = 3, scale_mode: str = "joint"
) -> int:
    """Length of ``self_description``'s output: K (block^2 - 1) per solve, one solve per scale if separate."""
    if not isinstance(n_channels, int) or isinstance(n_channels, bool) or n_channels < 1:
        raise UsageError(f"the number of channels must be a positive integer, got {n_channels!r}")
    _check_block(block)
    _check_choice("mode", mode, MODES)
    _check_choice("scale_mode", scale_mode, SCALE_MODES)
    _check_scales(scales)
    per_solve = n_channels * (block * block - 1)
    return per_solve * (scales if scale_mode == "separate" else 1)


def _take(t: Tensor, dim: int, positions: list[int]) -> Tensor:
    """``t.index_select(dim, positions)`` as slices of the runs of consecutive positions (faster)."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][1]:
            runs[-1][1] = p + 1
        else:
            runs.append([p, p + 1])
    parts = [t.narrow(dim, a, z - a) for a, z in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _box_gram(x: Tensor, box_h: int, box_w: int) -> Tensor:
    """Gram matrix (N, K*F, K*F), F = box_h*box_w, of all box values over the valid pixels.

    Index ``(k, A, j) -> k*F + A*box_w + j`` is channel k at box position (A, j), i.e. the
    pixel ``x_k[v + A, u + j]`` for valid pixel (v, u). The first box row comes from
    ``_first_box_row``, the other rows from the one-row-shift recurrence (module docstring).
    """
    n, k, h, w = x.shape
    valid_h = h - box_h + 1
    box = box_h * box_w
    g = x.new_empty(n, k, box_h, box_w, k, box_h, box_w)
    g[:, :, 0] = _first_box_row(x, box_h, box_w)
    if box_h > 1:
        shift = _row_shift_terms(x, box_h, box_w, valid_h)
        for a in range(1, box_h):
            g[:, :, a, :, :, 0] = g[:, :, 0, :, :, a].permute(0, 3, 4, 1, 2)
            g[:, :, a, :, :, 1:] = g[:, :, a - 1, :, :, :-1] + shift[:, :, a - 1]
    return g.view(n, k * box, k * box)


def _first_box_row(x: Tensor, box_h: int, box_w: int) -> Tensor:
    """``g[(k, 0, j), (l, B, m)]`` (N, K, box_w, K, box_h, box_w): lag sums plus edge corrections.

    In flat (row-major) pixel indices q, box position (B, m) is the shift ``B*W + m`` and the
    valid pixels are the q < L = (Hv-1) W + Wv whose column is < Wv; the others below L are
    "junk" (their window wraps round a row end). For d = B W + m - j >= 0,
    ``sum_{q valid} x_k[q+j] x_l[q+BW+m] = S_kl(d) + sum_u c_j(u) x_k[u+j] x_l[u+BW+m]`` where
    ``S_kl(d) = sum_{q<L} x_k[q] x_l[q+d]`` (all lags at once by FFT, exact: no index wraps)
    and c_j is -1 on the junk and on [-j, 0), +1 on [L-j, L): moving the window start from 0
    to j and dropping the junk. Entries with B = 0, m < j follow by symmetry.
    """
    n, k, h, w = x.shape
    valid_h, valid_w = h - box_h + 1, w - box_w + 1
    length = (valid_h - 1) * w + valid_w
    box = box_h * box_w
    dev = x.device
    cols = torch.arange(box_w, device=dev)
    shift = (torch.arange(box_h, device=dev)[:, None] * w + cols[None, :]).reshape(-1)
    lag = (shift[None, :] - cols[:, None]).clamp(min=0)

    flat = x.reshape(n, k, h * w)
    per_image = k * max(box * 2 * box_w + 4 * box_w * h, 4 * k * _fft_size(h * w))
    images = max(1, min(n, _CHUNK_ELEMENTS // per_image))
    first = x.new_empty(n, k, box_w, k, box)
    for i0 in range(0, n, images):
        part = flat[i0 : i0 + images]
        sums = _lag_sums(part, length, int(shift[-1]))[..., lag].permute(0, 1, 3, 2, 4)
        if box_w > 1:
            sums = sums + _edge_terms(part, box_h, box_w, w, valid_h, length)
        first[i0 : i0 + images] = sums
    first = first.view(n, k, box_w, k, box_h, box_w)
    same_row = first[:, :, :, :, 0]
    below = torch.ones(box_w, box_w, dtype=torch.bool, device=dev).tril(-1)[None, None, :, None, :]
    first[:, :, :, :, 0] = torch.where(below, same_row.permute(0, 3, 4, 1, 2), same_row)
    return first


def _edge_terms(flat: Tensor, box_h: int, box_w: int, w: int, valid_h: int, length: int) -> Tensor:
    """``sum_u c_j(u) x_k[u + j] x_l[u + BW + m]`` (N, K, box_w, K, F) of ``_first_box_row``.

    Start and end (the ``e = box_w - 1`` positions before 0 and before L): direct products.
    Junk (rows v < Hv-1, columns Wv + c, c < e): ``x_k[vW + Wv + c + j] x_l[(v+B)W + Wv + c + m]``
    summed over v is a product of two 2e-column strips, then summed over c along diagonals.
    All from strided views of the image with e zeros in front (read only where c_j is 0 or
    where the entry is later replaced by symmetry), so there is no index gather.
    """
    n, k, _ = flat.shape
    e = box_w - 1
    box = box_h * box_w
    padded = torch.cat([flat.new_zeros(n, k, e), flat], dim=2)
    sn, sk = padded.stride(0), padded.stride(1)

    def view(shape: tuple[int, ...], strides: tuple[int, ...], offset: int) -> Tensor:
        return padded.as_strided((n, k) + shape, (sn, sk) + strides, offset + e)

    steps = torch.arange(e, device=flat.device)
    mask = (steps[None, :] >= e - torch.arange(box_w, device=flat.device)[:, None]).to(flat.dtype)
    left = torch.cat([-mask * view((box_w, e), (1, 1), -e), mask * view((box_w, e), (1, 1), length - e)], dim=3)
    right = torch.cat([view((box_h, box_w, e), (w, 1, 1), -e), view((box_h, box_w, e), (w, 1, 1), length - e)], dim=4)
    ends = torch.bmm(left.reshape(n, k * box_w, 2 * e), right.reshape(n, k * box, 2 * e).transpose(1, 2))
    if valid_h < 2:
        return ends.view(n, k, box_w, k, box)
    start = w - e
    strip = view((2 * e, valid_h - 1), (1, w), start).reshape(n, k * 2 * e, valid_h - 1)
    strips = view((box_h, 2 * e, valid_h - 1), (w, 1, w), start).reshape(n, k * box_h * 2 * e, valid_h - 1)
    cross = torch.bmm(strip, strips.transpose(1, 2)).view(n, k, 2 * e, k, box_h, 2 * e)
    s = cross.stride()
    junk = cross.as_strided((n, k, box_w, k, box_h, box_w, e), s + (s[2] + s[5],)).sum(dim=-1)
    return (ends.view(n, k, box_w, k, box_h, box_w) - junk).view(n, k, box_w, k, box)


def _lag_sums(flat: Tensor, length: int, max_lag: int) -> Tensor:
    """``S[n, k, l, d] = sum_{q < length} flat[n, k, q] flat[n, l, q + d]`` for 0 <= d <= max_lag.

    Circular correlation by FFT of size >= H W; since length + max_lag <= H W no index wraps,
    so the circular sums are the plain ones.
    """
    n, k, size = flat.shape
    nfft = _fft_size(size)
    spectrum = torch.fft.rfft(flat, n=nfft)
    head = torch.fft.rfft(flat[..., :length], n=nfft).conj()
    sums = flat.new_empty(n, k, k, max_lag + 1)
    for a in range(k):
        sums[:, a] = torch.fft.irfft(head[:, a, None] * spectrum, n=nfft)[..., : max_lag + 1]
    return sums


def _fft_size(size: int) -> int:
    """Smallest 2^a 3^b 5^c >= size: FFT lengths with only small prime factors are fast."""
    best = 1 << max(0, (size - 1).bit_length())
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            m = p35
            while m < size:
                m *= 2
            best = min(best, m)
            p35 *= 5
        p3 *= 3
    return best


def _row_shift_terms(x: Tensor, box_h: int, box_w: int, valid_h: int) -> Tensor:
    """``g[A+1, B+1] - g[A, B]`` for A, B < box_h - 1: row ``valid_h + .`` products minus row ``.`` products.

    Returns (N, K, box_h-1, box_w, K, box_h-1, box_w); entry ``[k, s, j, l, t, m]`` is
    ``sum_u x_k[valid_h+s, u+j] x_l[valid_h+t, u+m] - x_k[s, u+j] x_l[t, u+m]``.
    """
    n, k, _, w = x.shape
    valid_w = w - box_w + 1
    span = k * (box_h - 1) * box_w

    def hankel(rows: Tensor) -> Tensor:
        return rows.unfold(3, box_w, 1).permute(0, 1, 2, 4, 3).reshape(n, span, valid_w)

    top = hankel(x[:, :, : box_h - 1])
    bottom = hankel(x[:, :, valid_h : valid_h + box_h - 1])
    left = torch.cat([bottom, top], dim=2)
    right = torch.cat([bottom, -top], dim=2)
    return torch.bmm(left, right.transpose(1, 2)).view(n, k, box_h - 1, box_w, k, box_h - 1, box_w)


def _downsample(x: Tensor) -> Tensor:
    """2x2 average pooling, sizes floored; an image under 2 pixels high or wide becomes empty."""
    b, k, h, w = x.shape
    if h < 2 or w < 2:
        return x.new_zeros(b, k, h // 2, w // 2)
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def _check_block(block: object) -> None:
    if not isinstance(block, int) or isinstance(block, bool) or block < 3 or block % 2 == 0:
        raise UsageError(
            f"the neighbourhood block must be an odd integer >= 3, got {block!r}", hint="the paper uses 11"
        )


def _check_scales(scales: object) -> None:
    if not isinstance(scales, int) or isinstance(scales, bool) or scales < 1:
        raise UsageError(f"scales must be an integer >= 1, got {scales!r}", hint="the paper uses 3")


def _check_ridge(ridge: object) -> None:
    if (
        not isinstance(ridge, (int, float))
        or isinstance(ridge, bool)
        or not float(ridge) >= 0.0
        or float(ridge) == float("inf")
    ):
        raise UsageError(f"ridge must be a finite number >= 0, got {ridge!r}", hint="1e-6 is the default")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {name} {value!r}", hint=f"choose one of {', '.join(choices)}")


def _check_channels(channels: object) -> None:
    if not isinstance(channels, Tensor) or channels.ndim != 4:
        raise UsageError("channels must be a (B, K, H, W) tensor")
    if channels.dtype != torch.float64:
        raise UsageError(
            f"channels must be float64, got {channels.dtype}",
            hint="call .double(): sums of squares over many pixels need float64",
        )
    if channels.shape[0] < 1 or channels.shape[1] < 1:
        raise UsageError(f"channels needs at least one image and one channel, got {tuple(channels.shape)}")


def _check_offsets(offsets: object) -> list[tuple[int, int]]:
    if isinstance(offsets, (str, bytes)) or not isinstance(offsets, Sequence) or not offsets:
        raise UsageError("offsets must be a non-empty sequence of (dy, dx) integer pairs")
    result: list[tuple[int, int]] = []
    for o in offsets:
        if (
            not isinstance(o, Sequence)
            or len(o) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in o)
        ):
            raise UsageError(f"an offset must be a (dy, dx) pair of integers, got {o!r}")
        pair = (int(o[0]), int(o[1]))
        if pair == (0, 0):
            raise UsageError("offsets must exclude (0, 0): a pixel cannot predict itself")
        result.append(pair)
    if len(set(result)) != len(result):
        raise UsageError("offsets must not repeat")
    return result


def _check_system(G: object, h: object, n: object, *, groups: object, ridge: object) -> int:
    if not isinstance(G, Tensor) or not isinstance(h, Tensor) or not isinstance(n, Tensor):
        raise UsageError("G, h and n must be tensors")
    if G.dtype != torch.float64 or h.dtype != torch.float64:
        raise UsageError(f"G and h must be float64, got {G.dtype} and {h.dtype}")
    if G.ndim < 2 or G.shape[-1] != G.shape[-2] or h.shape != G.shape[:-1]:
        raise UsageError(f"G must be (..., D, D) and h (..., D), got {tuple(G.shape)} and {tuple(h.shape)}")
    if n.ndim > G.ndim - 2 or tuple(n.shape) != tuple(G.shape[: n.ndim]):
        raise UsageError(f"n's shape {tuple(n.shape)} must be a leading part of the batch shape {tuple(G.shape[:-2])}")
    d = G.shape[-1]
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or d % groups or d == 0:
        raise UsageError(f"groups must be a positive integer dividing D = {d}, got {groups!r}")
    _check_ridge(ridge)
    if not bool(torch.isfinite(G.sum() + h.sum())):
        raise UsageError("G or h contain NaN or infinite values")
    return d
