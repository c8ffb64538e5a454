"""The procedural mini world (finetune.world) and its scorer (finetune.scorer)."""
import numpy as np
import pytest

from finetune.scorer import (accuracy, adherence, clip_features, frechet_distance,
                             label_components, score_clip)
from finetune.world import (ClipParams, WorldConfig, all_captions, caption, degrade,
                            make_clip, params_from_caption, parse_caption, render,
                            sample_params, trajectory, vocabulary)

N_REAL = 200
N_NOISY = 100  # noisy + blurred clips
N_SET = 64  # size of each set compared by the Frechet distance


@pytest.fixture(scope="module")
def real():
    clips = [make_clip(seed) for seed in range(N_REAL)]
    frames = [c[0] for c in clips]
    return dict(frames=frames, captions=[c[1] for c in clips], params=[c[2] for c in clips],
                scores=[score_clip(f) for f in frames])


@pytest.fixture(scope="module")
def noisy(real):
    rng = np.random.default_rng(1234)
    frames = [degrade(f, rng, noise_std=12.0, blur=3) for f in real["frames"][:N_NOISY]]
    return dict(frames=frames, captions=real["captions"][:N_NOISY],
                scores=[score_clip(f) for f in frames])


# ---------------------------------------------------------------- world

def test_make_clip_is_deterministic_per_seed():
    f1, c1, p1 = make_clip(7)
    f2, c2, p2 = make_clip(7)
    assert np.array_equal(f1, f2) and c1 == c2 and p1 == p2
    f3, _, p3 = make_clip(8)
    assert p3 != p1 and not np.array_equal(f1, f3)


def test_clip_shapes_dtypes_and_caption(real):
    for frames, text, params in zip(real["frames"][:20], real["captions"], real["params"]):
        assert frames.shape == (17, 128, 128, 3) and frames.dtype == np.uint8
        assert isinstance(params, ClipParams) and text == caption(params)
        assert text.startswith(f"a {params.colour} {params.shape} moves ")
    assert real["captions"][0] in all_captions()
    # different seeds give a spread of captions, not one repeated caption
    assert len(set(real["captions"])) == 24


def test_object_stays_inside_and_moves_clearly(real):
    for p in real["params"]:
        assert 28 <= p.radius <= 36 and 24 <= p.distance <= 40
        centres = trajectory(p)
        assert (centres - p.radius >= 0).all() and (centres + p.radius <= 128).all()
    for frames, p in zip(real["frames"][:60], real["params"]):
        # the outermost rows/columns are pure background in every frame
        edge = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], 1)
        assert (edge == 0).all()
        # the visible area never shrinks (no clipping at the edges)
        fg = frames.max(-1) > 100
        area = fg.sum((1, 2))
        assert area.min() > 0.97 * area.max()
        # centroid travel measured on pixels, along the caption's direction
        ys, xs = np.nonzero(fg[0])
        ye, xe = np.nonzero(fg[-1])
        move = {"right": xe.mean() - xs.mean(), "left": xs.mean() - xe.mean(),
                "down": ye.mean() - ys.mean(), "up": ys.mean() - ye.mean()}[p.direction]
        assert move >= 23


def test_rendered_colour_is_the_palette_colour():
    p = ClipParams("green", "square", "up", "black", 30.0, 64.0, 90.0, 30.0)
    frames = render(p)
    assert tuple(frames[0, 90, 64]) == (40, 200, 60)
    assert tuple(frames[-1, 60, 64]) == (40, 200, 60)  # moved up by 30 px
    assert tuple(frames[-1, 110, 64]) == (0, 0, 0)


def test_all_captions_and_vocabulary():
    caps = all_captions()
    assert len(caps) == 24 and len(set(caps)) == 24
    assert "a red circle moves to the right" in caps
    assert "a blue square moves up" in caps and "a green circle moves down" in caps
    words = {w for c in caps for w in c.split()}
    vocab = vocabulary()
    assert len(vocab) == len(set(vocab)) and set(vocab) == words


def test_params_from_caption_round_trips():
    rng = np.random.default_rng(0)
    for text in all_captions():
        p = params_from_caption(text, rng)
        assert caption(p) == text
        centres = trajectory(p)
        assert (centres - p.radius >= 0).all() and (centres + p.radius <= 128).all()
    a = params_from_caption("a red circle moves up", np.random.default_rng(5))
    b = params_from_caption("A red circle  moves up.", np.random.default_rng(5))
    assert a == b


@pytest.mark.parametrize("text, word", [
    ("a purple circle moves up", "purple"),
    ("a red triangle moves up", "triangle"),
    ("a red circle moves sideways", "moves"),
    ("a red circle moves up on a white background", "white"),
    ("hello world", "form"),
])
def test_params_from_caption_rejects_captions_outside_the_world(text, word):
    with pytest.raises(ValueError, match=word):
        params_from_caption(text, np.random.default_rng(0))


def test_world_config_is_validated():
    with pytest.raises(ValueError, match="hexagon"):
        WorldConfig(shapes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="fit"):
        WorldConfig(radius_range=(40.0, 50.0))


def test_enlarged_world():
    config = WorldConfig(colours={"red": (220, 40, 40), "yellow": (230, 220, 40), "blue": (50, 80, 230)},
                         backgrounds={"black": (0, 0, 0), "white": (255, 255, 255)})
    caps = all_captions(config)
    assert len(caps) == 3 * 2 * 4 * 2 == len(set(caps))
    assert "a yellow square moves down on a white background" in caps
    assert {"white", "background", "on"} <= set(vocabulary(config))
    p = params_from_caption("a yellow circle moves to the left on a white background",
                            np.random.default_rng(0), config)
    assert p.background == "white" and caption(p, config).endswith("white background")
    clips = [make_clip(seed, config) for seed in range(24)]
    assert {c[2].background for c in clips} == {"black", "white"}
    acc = adherence([c[0] for c in clips], [c[1] for c in clips], config)
    assert acc["all"] >= 0.95 and acc["background"] == 1.0


# ---------------------------------------------------------------- scorer

def test_label_components():
    mask = np.zeros((2, 6, 7), bool)
    mask[0, 0:2, 0:2] = True  # component 1
    mask[0, 3, 3] = mask[0, 4, 4] = True  # diagonal neighbours: 2 components
    mask[0, 1:6, 6] = True  # a bar
    mask[1, :, 1] = True  # a U-shape: one component
    mask[1, 5, 1:5] = True
    mask[1, :, 4] = True
    labels = label_components(mask)
    assert (labels[~mask] == -1).all()
    assert len(np.unique(labels[0][mask[0]])) == 4
    assert len(np.unique(labels[1][mask[1]])) == 1
    assert labels[0, 0, 0] == labels[0, 1, 1] != labels[0, 1, 6]


def test_scorer_on_real_clips(real):
    acc = accuracy(real["scores"], real["captions"])
    print("real clips:", acc)
    assert adherence(real["frames"][:40], real["captions"][:40]) == accuracy(
        real["scores"][:40], real["captions"][:40])
    for key in ("colour", "shape", "direction", "all"):
        assert acc[key] >= 0.95, (key, acc)
    assert all(s["coherent"] and s["background"] == "black" for s in real["scores"])


def test_scorer_against_shuffled_captions(real):
    scores, caps = real["scores"], np.array(real["captions"])
    runs = []
    for k in range(20):
        perm = np.random.default_rng(k).permutation(len(caps))
        runs.append(accuracy(scores, caps[perm]))
    mean = {key: np.mean([r[key] for r in runs]) for key in ("colour", "shape", "direction", "all")}
    print("shuffled captions (mean of 20 permutations):", mean, "first:", runs[0])
    assert abs(mean["colour"] - 1 / 3) < 0.05
    assert abs(mean["shape"] - 1 / 2) < 0.05
    assert abs(mean["direction"] - 1 / 4) < 0.05
    assert mean["all"] < 0.08 and max(r["all"] for r in runs) < 0.2


def test_scorer_on_noisy_blurred_clips(noisy):
    acc = accuracy(noisy["scores"], noisy["captions"])
    print("noisy+blurred clips:", acc)
    for key in ("colour", "shape", "direction", "all"):
        assert acc[key] >= 0.9, (key, acc)


def test_scorer_on_degenerate_videos():
    noise = np.random.default_rng(0).integers(0, 256, (17, 128, 128, 3), dtype=np.uint8)
    s = score_clip(noise)
    assert not s["coherent"] and s["shape"] == "none" and s["direction"] == "none"
    assert np.isfinite(s["features"]).all()

    black = np.zeros((17, 128, 128, 3), np.uint8)
    s = score_clip(black)
    assert s["background"] == "black" and not s["coherent"]
    assert s["colour"] == s["shape"] == s["direction"] == "none"
    assert np.isfinite(s["features"]).all()

    # red speckles all over: a colour but no clean shape
    speckle = np.zeros_like(black)
    speckle[np.random.default_rng(1).random((17, 128, 128)) < 0.1] = (220, 40, 40)
    s = score_clip(speckle)
    assert s["colour"] == "red" and not s["coherent"] and s["shape"] == "none"

    # a wide rectangle is neither a square nor a circle
    wide = np.zeros_like(black)
    wide[:, 50:80, 20:110] = (40, 200, 60)
    s = score_clip(wide)
    assert (s["colour"], s["shape"], s["coherent"]) == ("green", "none", True)

    # a square that does not move
    still = render(ClipParams("blue", "square", "up", "black", 30.0, 64.0, 64.0, 0.0))
    s = score_clip(still)
    assert (s["colour"], s["shape"], s["direction"], s["coherent"]) == ("blue", "square", "none", True)


def test_clip_features_shape():
    f = clip_features(make_clip(3)[0])
    assert f.shape == (16,) and f.dtype == np.float64 and np.isfinite(f).all()
    assert np.array_equal(f, score_clip(make_clip(3)[0])["features"])
    assert np.abs(f).max() < 3


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 2.0, (500, 1))
    b = rng.normal(-1.0, 0.5, (400, 1))
    expect = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expect, rel=1e-9)
    # diagonal covariances: sum over dimensions
    a = rng.normal(0, [1.0, 3.0, 0.2], (300, 3))
    b = rng.normal([0.5, 0, 0], [2.0, 1.0, 0.2], (300, 3))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    assert frechet_distance(a, b) > 0
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :2])
    # a full-covariance case against a direct computation via the sqrt of A B
    w, v = np.linalg.eig(cov_a @ cov_b)
    tr_sqrt = np.sqrt(w.real.clip(0)).sum()
    direct = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)
    assert frechet_distance(a, b) == pytest.approx(direct, rel=1e-6)


def test_frechet_distance_on_clip_sets(real):
    """Two sets of clips from disjoint seeds (same distribution) must be much
    closer than one of them and red-only clips or heavily noise-corrupted clips."""
    feats = np.array([s["features"] for s in real["scores"]])
    a, b = feats[:N_SET], feats[100:100 + N_SET]
    rng = np.random.default_rng(7)
    red_caps = [c for c in all_captions() if c.startswith("a red ")]
    red = np.array([clip_features(render(params_from_caption(red_caps[i % len(red_caps)], rng)))
                    for i in range(N_SET)])
    corrupted = np.array([clip_features(degrade(f, rng, noise_std=30.0, blur=1))
                          for f in real["frames"][:N_SET]])

    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    d_same = frechet_distance(a, b)
    assert d_same == pytest.approx(frechet_distance(b, a), rel=1e-6)
    d_red, d_noisy = frechet_distance(b, red), frechet_distance(b, corrupted)
    print(f"FD same-distribution {d_same:.4f}  red-only {d_red:.4f}  noise-corrupted {d_noisy:.4f}")
    assert d_red > 4 * d_same and d_noisy > 4 * d_same
