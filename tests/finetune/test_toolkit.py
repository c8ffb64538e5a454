"""The training toolkit on its own: settings checked from field metadata, flags derived from the
fields, the learning-rate schedules, and a resumable state that restores every stream."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from finetune.toolkit import (EMA, ConfigError, DataOrder, Resumable, add_flags, check_fields, config_from_flags,
                              read_state, scheduled_lr, setting)


@dataclass
class Example:
    steps: int = setting(10, lo=1, hi=100, help="steps")
    lr: float = setting(1e-3, lo=0.0, hi=1.0, lo_open=True)
    mode: str = setting("a", choices=("a", "b"))
    shares: list[int] | None = setting(None, lo=1, hi=8, example="whole numbers like 1,2")
    betas: tuple[float, float] = setting((0.9, 0.99), lo=0.0, hi=1.0, hi_open=True, length=2)
    fast: bool = setting(False)


@pytest.mark.parametrize("change, field", [
    (dict(steps=0), "steps"), (dict(steps=1.5), "steps"), (dict(steps=True), "steps"), (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"), (dict(mode="c"), "mode"), (dict(shares=[1, 9]), "shares"),
    (dict(shares="1,2"), "shares"), (dict(betas=[0.9]), "betas"), (dict(betas=[0.9, 1.0]), "betas"),
    (dict(fast="yes"), "fast"),
])
def test_fields_are_checked_from_their_metadata(change, field):
    with pytest.raises(ConfigError) as info:
        check_fields(Example(**change))
    assert info.value.field == field


def test_checked_lists_take_the_declared_container():
    cfg = Example(betas=[0.5, 0.6], shares=(2, 3))
    check_fields(cfg)
    assert cfg.betas == (0.5, 0.6) and cfg.shares == [2, 3]


def test_flags_come_from_the_fields():
    ap = argparse.ArgumentParser()
    add_flags(ap, Example)
    cfg = config_from_flags(Example, ap.parse_args(["--steps", "7", "--shares", "1,2", "--fast", "--mode", "b"]))
    assert (cfg.steps, cfg.shares, cfg.fast, cfg.mode, cfg.betas) == (7, [1, 2], True, "b", (0.9, 0.99))
    assert config_from_flags(Example, ap.parse_args(["--fast", "false"])).fast is False
    with pytest.raises(ConfigError) as info:
        config_from_flags(Example, ap.parse_args(["--shares", "1,x"]))
    assert info.value.field == "shares" and "1,2" in str(info.value)
    with pytest.raises(SystemExit):
        ap.parse_args(["--mode", "c"])


def test_learning_rate_schedules():
    assert scheduled_lr(0, lr=1.0, steps=10, warmup=2) == 0.5
    assert scheduled_lr(2, lr=1.0, steps=10, warmup=2) == 1.0 and scheduled_lr(9, lr=1.0, steps=10, warmup=2) == 0.0
    assert scheduled_lr(5, lr=1.0, steps=10, schedule="constant") == 1.0
    # overlapping: the warm-up scales a cosine that runs from step 0
    lr, steps, warmup, ratio = 1e-3, 100, 10, 0.1
    for step in (0, 5, 50, 99):
        cos = 0.5 * (1 + math.cos(math.pi * step / steps))
        want = lr * min(1.0, (step + 1) / warmup) * (ratio + (1 - ratio) * cos)
        assert scheduled_lr(step, lr=lr, steps=steps, warmup=warmup, min_ratio=ratio, overlap=True) == want


def test_resumable_state_restores_weights_optimiser_ema_streams_and_order(tmp_path):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1)
        rng = np.random.default_rng(2)
        state = Resumable(model, opt, EMA(model.state_dict().items(), 0.9, warmup=True), {"g": gen, "r": rng},
                          DataOrder(5, gen), key={"lr": 0.1})
        return model, opt, gen, rng, state

    def steps(model, opt, gen, rng, state, n, start):
        out = []
        for step in range(start, start + n):
            idx = state.order.take(2)
            loss = model(torch.randn(2, 3, generator=gen) + float(rng.normal())).pow(2).mean() + idx[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
            state.ema.update(model.state_dict().items(), step=step + 1)
            out.append(float(loss.detach()))
        return out

    straight = make()
    a = steps(*straight, 6, 0)
    first = make()
    b = steps(*first, 3, 0)
    first[4].save(tmp_path / "state.pt", 3, history=b)
    again = make()
    saved = read_state(tmp_path / "state.pt")
    assert again[4].restore(saved) == 3 and saved["history"] == b
    b += steps(*again, 3, 3)
    assert a == b
    assert all(torch.equal(straight[4].ema.shadow[k], again[4].ema.shadow[k]) for k in straight[4].ema.shadow)
    other = make()
    other[4].key = {"lr": 0.2}
    with pytest.raises(ConfigError, match="other settings"):
        other[4].restore(saved)
