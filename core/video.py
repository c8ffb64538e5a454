"""Video out: H.264/yuv420p mp4 through ffmpeg-python with the imageio-ffmpeg binary.

There is no ffprobe on these machines: videos are read back with the same ffmpeg binary.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected frames of shape (T, H, W, 3); got {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames.astype(np.float32) * (255.0 if frames.max() <= 1.0 else 1.0)), 0, 255)
        frames = frames.astype(np.uint8)
    return frames


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 16, crf: int = 17) -> Path:
    """Encode ``(T, H, W, 3)`` frames (uint8, or floats in [0, 1]) to an H.264 yuv420p mp4."""
    import ffmpeg

    frames = _check_frames(frames)
    t, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2  # yuv420p needs even sides
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        h, w = h + pad_h, w + pad_w
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    stream = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
        .output(str(tmp), vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset="medium", movflags="+faststart",
                r=fps)
        .overwrite_output()
    )
    try:
        stream.run(cmd=ffmpeg_exe(), input=np.ascontiguousarray(frames).tobytes(), capture_stdout=True,
                   capture_stderr=True)
    except ffmpeg.Error as exc:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed to write {path.name}: {exc.stderr.decode(errors='replace')[-500:]}") from exc
    tmp.replace(path)
    return path


def probe(path: str | Path) -> dict:
    """Width, height, fps and codec of a video, read from ffmpeg's own banner (no ffprobe here)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    m = re.search(r"Video: (\w+).*?, (\w+)(?:\([^)]*\))?, (\d+)x(\d+)[^,]*,.*?([\d.]+) fps", proc.stderr)
    if not m:
        raise ValueError(f"{path} holds no readable video stream")
    return {"codec": m.group(1), "pix_fmt": m.group(2), "width": int(m.group(3)), "height": int(m.group(4)),
            "fps": float(m.group(5))}


def read_frames(path: str | Path) -> np.ndarray:
    """Decode a video back to uint8 ``(T, H, W, 3)`` frames with the same ffmpeg binary."""
    info = probe(path)
    w, h = info["width"], info["height"]
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
        capture_output=True,
    )
    if proc.returncode != 0:
        raise ValueError(f"cannot decode {path}: {proc.stderr.decode(errors='replace')[-300:]}")
    data = np.frombuffer(proc.stdout, dtype=np.uint8)
    return data.reshape(-1, h, w, 3)


def _label_strip(text: str, width: int, height: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), (24, 24, 27))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(10, int(height * 0.6)))
    except TypeError:  # older Pillow
        font = ImageFont.load_default()
    box = draw.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    draw.text(((width - tw) // 2 - box[0], (height - th) // 2 - box[1]), text, fill=(245, 245, 245), font=font)
    return np.asarray(img)


def compose_side_by_side(videos: list[np.ndarray], labels: list[str], gap: int = 8) -> np.ndarray:
    """Place videos next to each other with a label over each; shorter ones hold their last frame
    and smaller ones are padded, so two runs of different shapes still compose."""
    if len(videos) != len(labels) or not videos:
        raise ValueError("one label per video, at least one video")
    videos = [_check_frames(v) for v in videos]
    t = max(v.shape[0] for v in videos)
    h = max(v.shape[1] for v in videos)
    label_h = max(16, h // 10)
    columns = []
    for v, label in zip(videos, labels):
        if v.shape[0] < t:
            v = np.concatenate([v, np.repeat(v[-1:], t - v.shape[0], axis=0)])
        if v.shape[1] < h:
            v = np.pad(v, ((0, 0), (0, h - v.shape[1]), (0, 0), (0, 0)))
        strip = np.broadcast_to(_label_strip(label, v.shape[2], label_h), (t, label_h, v.shape[2], 3))
        columns.append(np.concatenate([strip, v], axis=1))
        columns.append(np.zeros((t, h + label_h, gap, 3), dtype=np.uint8))
    return np.concatenate(columns[:-1], axis=2)


def write_side_by_side(videos: list[np.ndarray], labels: list[str], path: str | Path, fps: int = 16) -> Path:
    return write_mp4(compose_side_by_side(videos, labels), path, fps=fps)
