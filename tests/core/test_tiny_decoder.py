"""The tiny video decoder (core/tiny_decoder.py): shapes, the causal first frame, its folder, and
the errors a wrong input or a broken folder gives."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import ModelLoadError, RequestError
from core.tiny_decoder import TinyDecoderConfig, TinyVideoDecoder, load_tiny_decoder


@pytest.fixture
def model():
    torch.manual_seed(0)
    cfg = TinyDecoderConfig(latent_channels=16, widths=[12, 8, 4], blocks=[1, 1, 1], latent_space="test",
                            latents_mean=[0.1 * i for i in range(16)], latents_std=[1.0 + 0.1 * i for i in range(16)])
    m = TinyVideoDecoder(cfg).eval()
    for p in m.parameters():  # non-trivial weights everywhere (biases too)
        torch.nn.init.normal_(p, std=0.2)
    return m


@pytest.mark.parametrize("t, frames", [(1, 1), (5, 17)])
def test_output_shape(model, t, frames):
    x = torch.randn(2, 16, t, 3, 4)
    y = model.decode(x)
    assert y.shape == (2, 3, frames, 24, 32) == model.output_shape(x.shape)
    assert y.min() >= -1 and y.max() <= 1
    frames_u8 = model.decode_frames(x)
    assert len(frames_u8) == 2 and frames_u8[0].shape == (frames, 24, 32, 3) and frames_u8[0].dtype == np.uint8


def test_causal_first_frame(model):
    """Latent frame 0 alone makes pixel frame 0; latent frame 2 only reaches pixel frames 5 and later."""
    x = torch.randn(1, 16, 5, 4, 4)
    y = model(x)
    x2 = x.clone()
    x2[:, :, 2] += 3.0
    y2 = model(x2)
    assert torch.equal(y[:, :, :5], y2[:, :, :5])
    assert not torch.allclose(y[:, :, 5:9], y2[:, :, 5:9])
    # and frame 0 is what a one-frame latent decodes to
    assert torch.allclose(model(x[:, :, :1])[:, :, 0], y[:, :, 0], atol=1e-4)  # float32 sums in another order (outputs up to ~25)


def test_batch_chunks_agree(model):
    x = torch.randn(3, 16, 2, 2, 2)
    assert torch.allclose(model.decode(x, chunk=1), model.decode(x, chunk=3), atol=1e-5)


def test_folder_round_trip(model, tmp_path):
    model.save(tmp_path / "dec")
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_tiny_decoder(tmp_path / "dec")
    assert loaded.config == model.config
    x = torch.randn(1, 16, 2, 3, 3)
    assert torch.equal(loaded.decode(x), model.decode(x))
    # the weights' digest survives a save (the file's bytes need not: safetensors orders metadata freely)
    assert loaded.weights_sha256() == model.weights_sha256()
    with torch.no_grad():
        next(loaded.parameters()).view(-1)[0] += 1e-3
    assert loaded.weights_sha256() != model.weights_sha256()
    assert not any(p.requires_grad for p in loaded.parameters())


def test_normalise_and_matches_vae(model):
    class VaeConfig:
        z_dim = 16
        latents_mean = model.config.latents_mean
        latents_std = model.config.latents_std

    assert model.matches_vae(VaeConfig)
    VaeConfig.latents_std = [1.0] * 16
    assert not model.matches_vae(VaeConfig)
    z = torch.randn(1, 16, 1, 2, 2)
    raw = z * torch.tensor(model.config.latents_std).view(1, -1, 1, 1, 1) + \
        torch.tensor(model.config.latents_mean).view(1, -1, 1, 1, 1)
    assert torch.allclose(model.normalise(raw), z, atol=1e-5)


@pytest.mark.parametrize("shape, words", [
    ((1, 8, 5, 4, 4), "16 latent channels"),
    ((16, 5, 4, 4), "5-D"),
    ((1, 16, 5, 4, 4, 1), "5-D"),
    ((1, 16, 0, 4, 4), ">= 1"),
])
def test_wrong_input_is_a_clear_error(model, shape, words):
    with pytest.raises(RequestError, match=words) as info:
        model.decode(torch.zeros(shape))
    assert str(tuple(shape)) in str(info.value)


def test_wrong_type_and_dtype(model):
    with pytest.raises(RequestError, match="torch tensor"):
        model.decode(np.zeros((1, 16, 1, 2, 2), np.float32))
    with pytest.raises(RequestError, match="floating-point"):
        model.decode(torch.zeros((1, 16, 1, 2, 2), dtype=torch.int64))


def test_load_missing_or_corrupt_folder(model, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_tiny_decoder(tmp_path / "nothing")
    folder = model.save(tmp_path / "dec")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="cannot be read"):
        load_tiny_decoder(folder)
    model.save(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match="config.*invalid"):
        load_tiny_decoder(folder)
    (folder / "config.json").write_text(json.dumps({**model.config.to_dict(), "widths": [16, 8, 4]}))
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_tiny_decoder(folder)
    (folder / "config.json").write_text(json.dumps({**model.config.to_dict(), "colour": 1}))
    with pytest.raises(ModelLoadError, match="unknown config keys"):
        load_tiny_decoder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_tiny_decoder(folder)


def test_config_refuses_other_factors():
    with pytest.raises(ValueError, match="temporal 4 and spatial 8"):
        TinyDecoderConfig(spatial=16)
    with pytest.raises(ValueError, match="latents_mean has 3 entries"):
        TinyDecoderConfig(latents_mean=[0.0] * 3)
