"""Pieces of the worker that need no database or broker: the progress throttle, the model cache,
the Celery settings."""
from __future__ import annotations

import threading

import pytest

from workers.celery_app import celery_settings
from workers.models import ModelCache
from workers.progress import ProgressReporter

pytestmark = pytest.mark.timeout(30)


class FakeHeartbeat:
    item_id = 1

    def __init__(self):
        self.writes: list[dict] = []
        self.stop = False

    def beat(self, **progress):
        self.writes.append(progress)

    @property
    def should_stop(self):
        return self.stop


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def infos(stages=(50, 50, 20), step_seconds=0.01, clock=None):
    total, done = sum(stages), 0
    for stage, steps in enumerate(stages):
        for step in range(1, steps + 1):
            done += 1
            if clock is not None:
                clock.now += step_seconds
            yield {"stage": stage, "stages": len(stages), "step": step, "steps": steps,
                   "fraction": done / total, "sigma": 0.5, "preview": None}


def test_progress_is_throttled_but_stage_boundaries_are_written():
    beat, clock = FakeHeartbeat(), FakeClock()
    reporter = ProgressReporter(beat, min_interval=0.25, clock=clock)
    for info in infos(clock=clock):
        assert reporter(info) is False
    # 120 steps over 1.2 s: about 5 timed writes plus first and last step of each stage.
    assert 6 <= len(beat.writes) <= 12
    marks = {(w["stage"], w["step"]) for w in beat.writes}
    for stage, steps in enumerate((50, 50, 20)):
        assert (stage, 1) in marks and (stage, steps) in marks
    assert beat.writes[-1]["fraction"] == 1.0


def test_progress_asks_the_sampler_to_stop_and_passes_the_preview():
    beat, previews = FakeHeartbeat(), []
    reporter = ProgressReporter(beat, min_interval=10.0, on_preview=previews.append)
    assert reporter({"stage": 0, "stages": 2, "step": 1, "steps": 2, "fraction": 0.2}) is False
    reporter({"stage": 0, "stages": 2, "step": 2, "steps": 2, "fraction": 0.5, "preview": "frames"})
    assert previews == ["frames"]
    beat.stop = True
    assert reporter({"stage": 1, "stages": 2, "step": 1, "steps": 2, "fraction": 0.7}) is True


def test_model_cache_loads_once_and_evicts_least_recently_used():
    loaded = []

    def loader(preset, checkpoint):
        loaded.append((preset, checkpoint))
        return object()

    cache = ModelCache(size=2, loader=loader)
    tiny, seconds = cache.get("tiny")
    assert seconds >= 0 and loaded == [("tiny", None)]
    assert cache.get("tiny") == (tiny, 0.0)
    cache.get("tiny", "/ck/a")
    cache.get("tiny")  # most recent: ("tiny", None)
    cache.get("mini")  # evicts ("tiny", "/ck/a")
    assert cache.keys() == [("tiny", None), ("mini", None)]
    assert cache.get("tiny")[1] == 0.0
    assert cache.get("tiny", "/ck/a")[1] >= 0 and cache.loads == 4
    with pytest.raises(ValueError):
        ModelCache(size=0)


def test_model_cache_load_errors_propagate_and_are_not_cached():
    from core import ModelLoadError

    calls = []

    def loader(preset, checkpoint):
        calls.append(preset)
        raise ModelLoadError("weights not found: set PWAN_WAN_PATH")

    cache = ModelCache(size=2, loader=loader)
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="PWAN_WAN_PATH"):
            cache.get("wan2.1-1.3b")
    assert calls == ["wan2.1-1.3b"] * 2 and cache.keys() == []


def test_model_cache_is_thread_safe():
    loads = []
    cache = ModelCache(size=2, loader=lambda p, c: loads.append(p) or object())
    threads = [threading.Thread(target=cache.get, args=("tiny",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["tiny"]


def test_celery_settings_follow_the_broker():
    sql = celery_settings("sqla+sqlite:////tmp/b.sqlite3")
    assert sql["task_acks_late"] and sql["task_reject_on_worker_lost"]
    assert sql["worker_prefetch_multiplier"] == 1
    assert sql["worker_enable_remote_control"] is False
    assert "polling_interval" not in sql["broker_transport_options"]
    redis = celery_settings("redis://127.0.0.1:6379/0")
    assert redis["broker_transport_options"]["visibility_timeout"] >= 3600
    assert {q.name for q in redis["task_queues"]} == {"infer", "train"}
    assert redis["task_routes"]["workers.tasks.generate"]["queue"] == "infer"


def test_phase_changes_are_written_at_once_with_their_share_of_the_fraction():
    from workers.progress import PhaseShares

    beat, clock = FakeHeartbeat(), FakeClock()
    shares = PhaseShares.from_costs(6.0, 3.0, 1.0, "test")
    reporter = ProgressReporter(beat, min_interval=10.0, clock=clock, shares=shares, phase="loading")
    for info in infos(stages=(2, 2), clock=clock):
        reporter({"phase": "denoising", **info})
    reporter({"phase": "decoding", "seconds": {"denoise": 1.0}})
    reporter({"phase": "decoding"})  # the same phase again: nothing new to write
    reporter.set_phase("writing video")
    assert [w.get("phase") for w in beat.writes][-2:] == ["decoding", "writing video"]
    assert beat.writes[-3] == {"phase": "denoising", "stage": 1, "stages": 2, "step": 2, "steps": 2,
                               "fraction": pytest.approx(0.6)}
    assert beat.writes[-2] == {"phase": "decoding", "fraction": pytest.approx(0.6)}
    assert beat.writes[-1] == {"phase": "writing video", "fraction": pytest.approx(0.9)}
    # Without an estimate the denoising fraction is written as it comes and phases keep it.
    plain = FakeHeartbeat()
    ProgressReporter(plain, min_interval=10.0)({"phase": "decoding"})
    assert plain.writes == [{"phase": "decoding"}]


def test_shares_come_from_the_last_run_scaled_or_from_flops():
    from types import SimpleNamespace

    from workers.progress import PhaseShares, estimate_shares

    request = SimpleNamespace(frames=17, height=64, width=64)
    previous = {"id": 7, "frames": 17, "height": 32, "width": 32, "tflops": 2.0,
                "report": {"seconds": {"denoise": 4.0, "decode": 1.0, "write": 0.5}}}

    def tflops(req, decode=True):
        return {"denoise": 4.0, "decode": 1.0} if decode else {"denoise": 4.0}

    # 4x the pixels: decode 4 s, write 2 s; twice that run's TFLOPs: denoise 8 s.
    assert estimate_shares(request, previous, tflops) == PhaseShares(8 / 14, 4 / 14, 2 / 14,
                                                                     "measured seconds of run #7")
    assert estimate_shares(request, None, tflops) == PhaseShares(0.8, 0.2, 0.0, "FLOPs")
    assert estimate_shares(request, None, None) is None
    assert PhaseShares.from_costs(0.0, 1.0, 0.0, "x") is None and PhaseShares.from_costs(1.0, float("nan"), 0, "x") is None
