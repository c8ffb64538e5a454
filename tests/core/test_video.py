import numpy as np
import pytest

from core.video import compose_side_by_side, probe, read_frames, write_mp4, write_side_by_side


def _smooth_clip(t=9, h=64, w=96):
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(t):
        r = (xx + 4 * i) % w * 255 // w
        g = yy * 255 // h
        b = np.full_like(xx, 40 + 10 * i)
        frames.append(np.stack([r, g, b], -1))
    return np.asarray(frames, dtype=np.uint8)


def test_mp4_round_trip_is_h264_yuv420p_and_faithful(tmp_path):
    clip = _smooth_clip()
    path = write_mp4(clip, tmp_path / "a.mp4", fps=12)
    info = probe(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["fps"] == 12
    back = read_frames(path)
    assert back.shape == clip.shape
    assert np.abs(back.astype(float) - clip.astype(float)).mean() < 3


def test_odd_sizes_are_padded_and_floats_accepted(tmp_path):
    clip = _smooth_clip(h=31, w=45).astype(np.float32) / 255.0
    back = read_frames(write_mp4(clip, tmp_path / "b.mp4"))
    assert back.shape == (9, 32, 46, 3)


def test_side_by_side_has_both_videos_and_labels(tmp_path):
    a, b = _smooth_clip(t=9), _smooth_clip(t=5)[:, :, ::-1]
    comp = compose_side_by_side([a, b], ["original 0-0-50", "pyramidal 20-20-10"], gap=8)
    label_h = comp.shape[1] - 64
    assert comp.shape == (9, 64 + label_h, 96 * 2 + 8, 3)
    assert np.array_equal(comp[:, label_h:, :96], a)
    assert np.array_equal(comp[:5, label_h:, 104:], b)
    assert np.array_equal(comp[8, label_h:, 104:], b[-1]), "shorter video holds its last frame"
    strip = comp[0, :label_h, :96]
    assert strip.max() > 200 and (strip > 200).mean() < 0.5, "a light label on a dark strip"
    path = write_side_by_side([a, b], ["A", "B"], tmp_path / "sbs.mp4")
    assert read_frames(path).shape[0] == 9


def test_bad_frames_are_refused(tmp_path):
    with pytest.raises(ValueError):
        write_mp4(np.zeros((4, 8, 8)), tmp_path / "x.mp4")
    with pytest.raises(ValueError):
        read_frames(tmp_path / "missing.mp4")
