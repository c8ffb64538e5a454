"""The moving parts of a training loop that a resume must restore, and the schedule they follow.

:class:`Resumable` writes one state file: the weights, the optimiser, the EMA, every random
stream and the data order's position, the step, a key of the settings that must not change,
and whatever the loop adds (its history, the compute spent). Reading it back into the same
objects continues the run bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from finetune.toolkit.config import ConfigError

STATE_FORMAT = 2


def scheduled_lr(step: int, *, lr: float, steps: int, schedule: str = "cosine", warmup: int = 0,
                 min_ratio: float = 0.0, overlap: bool = False) -> float:
    """Learning rate of optimiser step ``step`` (0-based). By default a linear warm-up over
    ``warmup`` steps, then ``constant`` or ``cosine`` from ``lr`` to ``lr * min_ratio`` at the
    last step. ``overlap``: the cosine runs over all ``steps`` from step 0 and the warm-up scales
    it (the mini-world recipe's pretraining and VAE)."""
    if overlap:
        warm = min(1.0, (step + 1) / max(1, warmup))
        cos = 0.5 * (1 + math.cos(math.pi * step / steps))
        return lr * warm * (min_ratio + (1 - min_ratio) * cos)
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "cosine":
        t = min(max(step - warmup, 0) / max(steps - warmup - 1, 1), 1.0)
        return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


class EMA:
    """Exponential moving average of named tensors: fp32 shadows of floating-point ones, integer
    buffers copied. ``warmup``: the decay grows as ``(1 + step) / (10 + step)`` up to ``decay``,
    so early steps are not averaged with the random initialisation for long."""

    def __init__(self, named: Iterable[tuple[str, torch.Tensor]], decay: float, warmup: bool = False):
        self.decay, self.warmup = decay, warmup
        self.shadow = {n: t.detach().float().clone() if t.is_floating_point() else t.detach().clone()
                       for n, t in named}

    @torch.no_grad()
    def update(self, named: Iterable[tuple[str, torch.Tensor]], step: int = 0) -> None:
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        for n, t in named:
            s = self.shadow[n]
            if s.is_floating_point():
                s.lerp_(t.detach().float(), 1.0 - decay)
            else:
                s.copy_(t)

    @torch.no_grad()
    def swap(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Exchange model and shadow values (call twice to undo)."""
        for n, t in named:
            s = self.shadow[n]
            tmp = t.detach().clone()
            t.copy_(s.to(t.dtype))
            s.copy_(tmp.float() if s.is_floating_point() else tmp)

    @contextmanager
    def applied(self, named: list[tuple[str, torch.Tensor]]):
        """The averaged weights in the model for the ``with`` block (to write a checkpoint)."""
        self.swap(named)
        try:
            yield
        finally:
            self.swap(named)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: s.cpu() for n, s in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, v in state.items():
                self.shadow[n].copy_(v)


class DataOrder:
    """Shuffled passes over ``n`` clips, drawn from the training generator; its state is saved."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator
        self.perm: list[int] = []
        self.pos = 0
        self.epoch = 0

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= len(self.perm):
                self.perm = torch.randperm(self.n, generator=self.generator).tolist()
                self.pos = 0
                self.epoch += 1
            out.append(self.perm[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"perm": list(self.perm), "pos": self.pos, "epoch": self.epoch, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n:
            raise ConfigError(f"the data changed since the saved state ({state['n']} clips, now {self.n}); "
                              "train into a new folder", "data")
        self.perm, self.pos, self.epoch = list(state["perm"]), int(state["pos"]), int(state["epoch"])


def rng_state(generators: dict) -> dict:
    """Every random stream a loop may draw from: its own generators (torch or numpy) and the
    global torch, numpy, Python and CUDA ones."""
    state = {"generators": {k: g.get_state() if isinstance(g, torch.Generator) else g.bit_generator.state
                            for k, g in generators.items()},
             "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generators: dict, state: dict) -> None:
    for k, g in generators.items():
        if isinstance(g, torch.Generator):
            g.set_state(state["generators"][k].cpu())
        else:
            g.bit_generator.state = state["generators"][k]
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_state(path: str | Path) -> dict | None:
    """A state file written by :meth:`Resumable.save` (on the CPU), or None if there is none."""
    path = Path(path)
    return torch.load(path, weights_only=False, map_location="cpu") if path.is_file() else None


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _optimizer_state(optimizer) -> dict | None:
    if optimizer is None:
        return None
    if isinstance(optimizer, dict):
        return {name: opt.state_dict() for name, opt in optimizer.items()}
    return optimizer.state_dict()


def _rank_file(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


@dataclass
class Resumable:
    """What a resumed loop needs to continue bit for bit. ``weights`` is a module (its state dict)
    or a list of named tensors restored in place (the trainable part only, e.g. a LoRA).
    ``key``: settings a resume must share with the run that wrote the state (``where`` and
    ``error`` word the refusal)."""

    weights: torch.nn.Module | list[tuple[str, torch.Tensor]]
    optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer] | None = None  # a dict: one per part
    ema: EMA | None = None
    generators: dict = field(default_factory=dict)
    order: DataOrder | None = None
    key: dict | None = None
    where: str = "the output folder"
    error: type[ConfigError] = ConfigError

    def save(self, path: str | Path, step: int, *, rank: int = 0, **extra) -> None:
        """Write the state atomically. Rank 0 writes everything; other ranks of a distributed run
        only their random streams and data order, beside it."""
        path = Path(path)
        streams = {"rng": rng_state(self.generators), "order": self.order.state_dict() if self.order else None}
        if rank:
            _atomic_save(streams, _rank_file(path, rank))
            return
        weights = self.weights.state_dict().items() if isinstance(self.weights, torch.nn.Module) else self.weights
        _atomic_save({"format": STATE_FORMAT, "step": step, "key": self.key,
                      "model": {n: t.detach().cpu() for n, t in weights},
                      "optimizer": _optimizer_state(self.optimizer),
                      "ema": self.ema.state_dict() if self.ema is not None else None, **streams, **extra}, path)

    def restore(self, saved: dict, *, path: str | Path | None = None, rank: int = 0,
                optimizer: bool = True) -> int:
        """Load ``saved`` (from :func:`read_state`) into the weights, optimiser (unless
        ``optimizer`` is False, or the state holds none: a weights-only state), EMA, random
        streams and data order; returns its step. A state written with another key is refused."""
        self.check_key(saved.get("key"))
        if isinstance(self.weights, torch.nn.Module):
            self.weights.load_state_dict(saved["model"])
        else:
            with torch.no_grad():
                for n, t in self.weights:
                    t.copy_(saved["model"][n].to(t.device, t.dtype))
        if optimizer and self.optimizer is not None and saved.get("optimizer") is not None:
            if isinstance(self.optimizer, dict):
                for name, opt in self.optimizer.items():
                    opt.load_state_dict(saved["optimizer"][name])
            else:
                self.optimizer.load_state_dict(saved["optimizer"])
        if self.ema is not None and saved.get("ema") is not None:
            self.ema.load_state_dict(saved["ema"])
        streams = saved
        if rank and path is not None:
            streams = read_state(_rank_file(Path(path), rank)) or {}
        if streams.get("rng") is not None:
            set_rng_state(self.generators, streams["rng"])
        if self.order is not None and streams.get("order") is not None:
            self.order.load_state_dict(streams["order"])
        return int(saved["step"])

    def check_key(self, saved) -> None:
        """Refuse (``error``) a saved key other than this run's own."""
        if self.key is None or saved == self.key or saved == json.loads(json.dumps(self.key)):
            return
        saved = saved or {}
        changed = [k for k in self.key if saved.get(k) != self.key[k]]
        raise self.error(f"{self.where} holds a run with other settings ({', '.join(changed)}); "
                         "choose a new output folder or the same settings", changed[0] if changed else None)
