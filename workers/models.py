"""Resident models: a worker loads a preset once and keeps it for the next runs.

A small LRU cache keyed by ``(preset, checkpoint folder)``. A hit costs nothing, so the run's
report says ``load_seconds == 0`` on a warm worker. Evicted pipelines are dropped and, on a GPU,
their memory is returned before the next load.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Loader = Callable[[str, "str | None"], Any]


def _load_with_core(preset: str, checkpoint_dir: str | None) -> Any:
    from core import load_pipeline

    return load_pipeline(preset, checkpoint_dir=checkpoint_dir)


class ModelCache:
    """At most ``size`` loaded pipelines, least recently used evicted first."""

    def __init__(self, size: int = 2, loader: Loader | None = None):
        if size < 1:
            raise ValueError("the model cache needs room for at least one model")
        self.size = size
        self._loader = loader or _load_with_core
        self._items: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was actually loaded

    def get(self, preset: str, checkpoint_dir: str | None = None) -> tuple[Any, float]:
        """The pipeline for ``(preset, checkpoint_dir)`` and the seconds spent loading it now
        (0.0 when it was already resident). Load errors propagate (``core.ModelLoadError``)."""
        key = (preset, str(checkpoint_dir) if checkpoint_dir is not None else None)
        asked = time.perf_counter()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                # Resident: free. (If it had to wait for a load in another thread, e.g. the
                # start-up preload, that wait is what this run paid for its model.)
                waited = time.perf_counter() - asked
                return self._items[key], waited if waited > 0.05 else 0.0
            while len(self._items) >= self.size:
                old_key, _ = self._items.popitem(last=False)
                log.info("evicting resident model %s", old_key)
                _release_memory()
            started = time.perf_counter()
            pipe = self._loader(*key)
            seconds = time.perf_counter() - started
            self._items[key] = pipe
            self.loads += 1
            log.info("loaded model %s in %.2f s", key, seconds)
            return pipe, seconds

    def keys(self) -> list[tuple[str, str | None]]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            _release_memory()


def _release_memory() -> None:
    gc.collect()
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_cache: ModelCache | None = None


def model_cache() -> ModelCache:
    """This process's cache (size from ``PWAN_MODEL_CACHE``)."""
    global _cache
    if _cache is None:
        from settings import get_settings

        _cache = ModelCache(size=get_settings().model_cache)
    return _cache
