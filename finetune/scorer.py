"""Deterministic scorer: read the world's attributes back from any clip.

Works on uint8 (T, H, W, 3) videos, rendered or generated (noisy, blurry):

* background: median colour of the frame borders, snapped to the nearest
  background of the config;
* foreground: pixels whose colour is far from that border colour; the threshold
  is the larger of a noise floor (measured on the borders) and half the
  foreground's level (half-maximum, so blur barely moves the object's edge);
* colour: median foreground colour snapped to the nearest palette colour;
* direction: a line fitted through the per-frame centroids of the object; the
  dominant axis and sign of its travel, or "none" when it barely moves;
* shape: fill ratio of the object in its bounding box (circle pi/4, square 1),
  snapped to the nearest shape of the config, "none" when far from all of them,
  when the bounding box is elongated, or when the foreground is not one
  coherent blob.

The object of a frame is its largest 4-connected component of foreground
(labelled in numpy, no scipy); ``coherent`` says whether that component holds
most of the foreground in most frames.
"""
from __future__ import annotations

import numpy as np

from finetune.world import SHAPE_FILL, WorldConfig, parse_caption

NOISE_FLOOR = 40.0  # minimum colour distance (0..441) for a foreground pixel
COHERENT_FRACTION = 0.8  # share of the foreground the largest component must hold
MIN_OBJECT_FRACTION = 0.002  # of the frame area, for a frame to count as showing an object
MIN_MOVE_FRACTION = 0.05  # of the frame size, for the object to count as moving
SHAPE_TOLERANCE = 0.1  # max |fill - reference fill| to name a shape
ASPECT_TOLERANCE = 0.25  # max |log(width / height)|: the world's shapes are not elongated


def _border(frames: np.ndarray, width: int = 2) -> np.ndarray:
    """(N, 3) float pixels of the outer `width` rows/columns of every frame."""
    f = frames.astype(np.float64)
    parts = [f[:, :width], f[:, -width:], f[:, width:-width, :width], f[:, width:-width, -width:]]
    return np.concatenate([p.reshape(-1, 3) for p in parts])


def _nearest(colour: np.ndarray, palette: dict) -> str:
    names = list(palette)
    d = [np.linalg.norm(colour - np.asarray(palette[n], np.float64)) for n in names]
    return names[int(np.argmin(d))]


def label_components(mask: np.ndarray) -> np.ndarray:
    """4-connected components of a boolean (..., H, W) mask, separately per
    leading index.  Returns int64 labels of the same shape: -1 off the mask,
    otherwise the smallest flat index of a pixel of the component.

    Union-find over horizontal runs of foreground: two runs in adjacent rows are
    joined where they overlap (the overlap begins where one of them starts, so
    only those columns are examined).  Each round hooks the larger root of every
    joint whose ends differ onto the smaller one, then compresses paths by
    pointer jumping, until every joint links runs of one root."""
    mask = np.asarray(mask, bool)
    shape, W = mask.shape, mask.shape[-1]
    out = np.full(mask.size, -1, np.int64)
    start = mask.copy()
    start[..., 1:] &= ~mask[..., :-1]
    starts = np.flatnonzero(start)  # first pixel of each run, raster order
    if len(starts) == 0:
        return out.reshape(shape)
    run = np.cumsum(start.reshape(-1)) - 1  # run number of every on pixel
    joint = np.zeros_like(mask)
    joint[..., :-1, :] = mask[..., :-1, :] & mask[..., 1:, :] & (start[..., :-1, :] | start[..., 1:, :])
    upper = np.flatnonzero(joint)
    u, v = run[upper], run[upper + W]
    root = np.arange(len(starts))
    while True:
        ru, rv = root[u], root[v]
        differ = ru != rv
        if not differ.any():
            break
        u, v, ru, rv = u[differ], v[differ], ru[differ], rv[differ]
        np.minimum.at(root, np.maximum(ru, rv), np.minimum(ru, rv))  # root[i] <= i: no cycles
        while True:
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
    on = mask.reshape(-1)
    out[on] = starts[root[run[on]]]  # the first run in raster order starts at the smallest index
    return out.reshape(shape)


def _analyse(frames: np.ndarray, config: WorldConfig) -> dict:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected a (T, H, W, 3) video, got shape {frames.shape}")
    T, H, W, _ = frames.shape
    f = frames.astype(np.float32)

    border = _border(frames)
    bg_colour = np.median(border, axis=0)
    border_dist = np.linalg.norm(border - bg_colour, axis=1)
    mad = np.median(np.abs(border_dist - np.median(border_dist)))
    floor = max(NOISE_FLOOR, float(np.median(border_dist) + 6 * 1.4826 * mad))
    diff = f - bg_colour.astype(np.float32)
    dist = np.sqrt(np.einsum("thwc,thwc->thw", diff, diff))
    level = float(np.percentile(dist[:, ::2, ::2], 99))  # on every 4th pixel: cheaper, nearly equal
    mask = dist > max(floor, 0.5 * level)

    # Label only the rows/columns that hold foreground in some frame.
    rows, cols = np.flatnonzero(mask.any((0, 2))), np.flatnonzero(mask.any((0, 1)))
    r0, c0 = (rows[0], cols[0]) if len(rows) else (0, 0)
    crop = mask[:, r0:rows[-1] + 1, c0:cols[-1] + 1] if len(rows) else mask[:, :1, :1]
    labels = label_components(crop)
    area = crop.shape[1] * crop.shape[2]
    counts = np.bincount(labels[crop], minlength=crop.size).reshape(T, area)
    fg_count = crop.reshape(T, -1).sum(1)
    biggest = counts.argmax(1)  # flat index within the crop of each frame's largest component
    big_count = counts[np.arange(T), biggest]
    present = big_count >= MIN_OBJECT_FRACTION * H * W
    share = np.where(fg_count > 0, big_count / np.maximum(fg_count, 1), 0.0)

    # Each frame's object: its largest component (all frames at once).
    obj = (labels == (np.arange(T) * area + biggest)[:, None, None])[present]
    n_obj = big_count[present].astype(np.float64)
    col_hist, row_hist = obj.sum(1), obj.sum(2)  # (n, w) pixels per column, (n, h) per row
    centroids = np.stack([col_hist @ np.arange(col_hist.shape[1]) / n_obj + c0 + 0.5,
                          row_hist @ np.arange(row_hist.shape[1]) / n_obj + r0 + 0.5], 1)

    def extent(hist):  # bounding-box length from first to last occupied index
        occupied = hist > 0
        return hist.shape[1] - occupied[:, ::-1].argmax(1) - occupied.argmax(1)

    w, h = extent(col_hist), extent(row_hist)
    fills, aspects = n_obj / (w * h), np.log(w / h)
    times = np.flatnonzero(present).astype(np.float64)

    if len(times) >= 2:  # least-squares line per axis through the centroids
        A = np.stack([np.ones_like(times), times], 1)
        coef, *_ = np.linalg.lstsq(A, centroids, rcond=None)
        start, velocity = coef[0], coef[1]
        jitter = float(np.sqrt(np.mean((A @ coef - centroids) ** 2)))
    elif len(times) == 1:
        start, velocity, jitter = centroids[0], np.zeros(2), 0.0
    else:
        start, velocity, jitter = np.array([W / 2, H / 2]), np.zeros(2), 0.0
    displacement = velocity * (T - 1)

    fg_pixels = f[mask]
    fg_pixels = fg_pixels[::max(1, len(fg_pixels) // 16384)].astype(np.float64).T  # (3, <=32k)
    return dict(
        background=_nearest(bg_colour, config.backgrounds), bg_colour=bg_colour,
        border_std=float(border.std(axis=0).mean()),
        fg_colour=np.median(fg_pixels, axis=1) if fg_pixels.size else None,
        fg_mean=fg_pixels.mean(1) if fg_pixels.size else np.zeros(3),
        fg_spread=float(fg_pixels.std(1).mean()) if fg_pixels.size else 0.0,
        fg_fraction=float(fg_count.mean() / (H * W)),
        present=present, present_fraction=float(present.mean()),
        coherence=float(share[present].mean()) if present.any() else 0.0,
        fill=float(fills.mean()) if len(fills) else 0.0,
        aspect=float(aspects.mean()) if len(aspects) else 0.0,
        start=np.asarray(start, np.float64), displacement=np.asarray(displacement, np.float64),
        jitter=jitter, size=(H, W),
    )


def _features(a: dict) -> np.ndarray:
    H, W = a["size"]
    scale = np.array([W, H], np.float64)
    return np.concatenate([
        a["fg_mean"] / 255.0,  # 0-2 colour of the foreground
        [a["fill"]],  # 3 shape (fill ratio of the bounding box)
        [2.0 * np.sqrt(a["fg_fraction"])],  # 4 object size
        a["start"] / scale,  # 5-6 where the object starts
        2.0 * a["displacement"] / scale,  # 7-8 motion (direction and speed)
        [a["aspect"]],  # 9 log width/height of the bounding box
        [a["coherence"]],  # 10 how much of the foreground is one blob
        [a["bg_colour"].mean() / 255.0],  # 11 background brightness
        [a["fg_spread"] / 64.0],  # 12 colour noise inside the object
        [a["border_std"] / 32.0],  # 13 noise of the background
        [10.0 * a["jitter"] / max(H, W)],  # 14 non-linearity of the motion
        [a["present_fraction"]],  # 15 share of frames showing an object
    ])


def clip_features(frames: np.ndarray, config: WorldConfig | None = None) -> np.ndarray:
    """A fixed 16-dim descriptor of a clip, each entry scaled to roughly [0, 1]
    (motion and aspect to about [-1, 1]).

    Why a fixed, hand-made feature map rather than the activations of a trained
    video network (as FVD uses): no such network is available offline or cheap on
    CPU, and this world varies only a handful of things (colour, shape, size,
    position, motion, background).  A fixed map of exactly those, plus a few
    quality cues (colour spread, background noise, track jitter, coherence,
    frames with an object), is deterministic, costs milliseconds, is comparable
    across runs and checkpoints, and each coordinate can be read to see *what*
    drifted when the Frechet distance grows."""
    return _features(_analyse(frames, config or WorldConfig()))


def score_clip(frames: np.ndarray, config: WorldConfig | None = None) -> dict:
    """dict(colour, shape, direction, background, coherent, features).
    colour / shape / direction are "none" when they cannot be read."""
    config = config or WorldConfig()
    a = _analyse(frames, config)
    H, W = a["size"]
    has_object = a["present"].sum() >= max(2, len(a["present"]) // 2)
    coherent = bool(has_object and a["coherence"] >= COHERENT_FRACTION)

    has_fg = a["fg_fraction"] >= MIN_OBJECT_FRACTION
    colour = _nearest(a["fg_colour"], config.colours) if has_fg else "none"

    shape = "none"
    if coherent and abs(a["aspect"]) <= ASPECT_TOLERANCE:
        nearest = min(config.shapes, key=lambda s: abs(SHAPE_FILL[s] - a["fill"]))
        if abs(SHAPE_FILL[nearest] - a["fill"]) <= SHAPE_TOLERANCE:
            shape = nearest

    direction = "none"
    dx, dy = a["displacement"]
    if has_object and max(abs(dx), abs(dy)) >= MIN_MOVE_FRACTION * max(H, W):
        if abs(dx) >= abs(dy):
            direction = "right" if dx > 0 else "left"
        else:
            direction = "down" if dy > 0 else "up"
        if direction not in config.directions:
            direction = "none"

    return dict(colour=colour, shape=shape, direction=direction, background=a["background"],
                coherent=coherent, features=_features(a))


def adherence(frames_list, captions, config: WorldConfig | None = None) -> dict:
    """Share of clips whose scored colour / shape / direction match their caption;
    `all` counts clips where all three match.  Also `n` and, for captions that
    name a background, `background`."""
    config = config or WorldConfig()
    frames_list = list(frames_list)
    if len(frames_list) != len(list(captions)):
        raise ValueError("need as many captions as clips")
    return accuracy([score_clip(f, config) for f in frames_list], captions, config)


def accuracy(scores, captions, config: WorldConfig | None = None) -> dict:
    """:func:`adherence` from already computed :func:`score_clip` results."""
    config = config or WorldConfig()
    scores, captions = list(scores), list(captions)
    if len(scores) != len(captions) or not captions:
        raise ValueError("need as many captions as scores, and at least one")
    hits = {"colour": 0, "shape": 0, "direction": 0, "all": 0}
    bg_hits = bg_total = 0
    for got, text in zip(scores, captions):
        want = parse_caption(text, config)
        ok = {k: got[k] == want[k] for k in ("colour", "shape", "direction")}
        for k, v in ok.items():
            hits[k] += v
        hits["all"] += all(ok.values())
        if want["background"] is not None:
            bg_total += 1
            bg_hits += got["background"] == want["background"]
    out = {k: v / len(captions) for k, v in hits.items()}
    out["n"] = len(captions)
    if bg_total:
        out["background"] = bg_hits / bg_total
    return out


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets:
    |mu_a - mu_b|^2 + tr(A) + tr(B) - 2 tr((A^1/2 B A^1/2)^1/2)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two (N>=2, D) feature sets, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrtm_psd(cov_a)
    mid = root_a @ cov_b @ root_a
    tr_mid = np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0.0, None)).sum()
    d = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_mid)
    return max(d, 0.0)
