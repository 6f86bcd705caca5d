"""The ConvLSTM layers, the AE / VAE, the masked loss and the KL term."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from torch import nn

from core.models import (
    ConfigError, ConvLSTM, ConvLSTMCell, ModelArgs, build_model, kl_divergence, load_model, masked_loss,
    model_args_for, model_payload,
)

TINY = dict(n_lines=5, size=16, latent_dim=6, stem_channels=(4,), enc_hidden=(5, 6), enc_strides=(1, 2),
            dec_hidden=(6, 5), head_channels=(4, 3))


def tiny_args(kind="ae") -> ModelArgs:
    return ModelArgs(kind=kind, **TINY)


def test_cell_shapes_and_stride():
    cell = ConvLSTMCell(3, 7, kernel_size=3, stride=2)
    h, c = cell(torch.randn(2, 3, 16, 16))
    assert h.shape == c.shape == (2, 7, 8, 8)
    h2, c2 = cell(torch.randn(2, 3, 16, 16), (h, c))
    assert h2.shape == c2.shape == (2, 7, 8, 8)


def test_cell_matches_textbook_concatenated_convolution():
    """Splitting the gate convolution into input and state halves is the same ConvLSTM."""
    torch.manual_seed(0)
    cell = ConvLSTMCell(3, 4)
    x, h, c = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    joint = nn.Conv2d(7, 16, 3, padding=1)
    with torch.no_grad():
        joint.weight.copy_(torch.cat([cell.conv_x.weight, cell.conv_h.weight], dim=1))
        joint.bias.copy_(cell.conv_x.bias)
    gates = joint(torch.cat([x, h], dim=1))
    i, f, o, g = gates.chunk(4, dim=1)
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_ref = torch.sigmoid(o) * torch.tanh(c_ref)
    h_new, c_new = cell(x, (h, c))
    torch.testing.assert_close(c_new, c_ref)
    torch.testing.assert_close(h_new, h_ref)
    # No state is the zero state (the state convolution is skipped, not wrong).
    torch.testing.assert_close(cell(x), cell(x, (torch.zeros_like(h), torch.zeros_like(c))))


def test_layer_shapes_with_and_without_initial_state():
    layer = ConvLSTM(2, 5, kernel_size=3, stride=2)
    x = torch.randn(3, 4, 2, 8, 8)  # (B, T, C, H, W)
    seq, (h, c) = layer(x)
    assert seq.shape == (3, 4, 5, 4, 4)
    assert h.shape == c.shape == (3, 5, 4, 4)
    torch.testing.assert_close(seq[:, -1], h)
    state = (torch.randn(3, 5, 4, 4), torch.randn(3, 5, 4, 4))
    seq2, _ = layer(x, state)
    assert seq2.shape == seq.shape
    assert not torch.allclose(seq2, seq)  # the initial state is used


def test_layer_equals_stepping_the_cell():
    torch.manual_seed(1)
    layer = ConvLSTM(2, 3)
    x = torch.randn(2, 5, 2, 6, 6)
    seq, _ = layer(x)
    state = None
    for t in range(5):
        state = layer.cell(x[:, t], state)
        torch.testing.assert_close(seq[:, t], state[0])


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_model_shapes(kind):
    torch.manual_seed(0)
    model = build_model(tiny_args(kind))
    x = torch.randn(3, 5, 1, 16, 16)
    out = model(x)
    assert out.recon.shape == x.shape
    assert out.mu.shape == out.z.shape == (3, 6)
    assert (out.logvar is None) == (kind == "ae")
    if kind == "vae":
        assert out.logvar.shape == (3, 6)
        assert not torch.equal(out.z, out.mu)  # sampled while training
        model.eval()
        out = model(x)
        torch.testing.assert_close(out.z, out.mu)
    torch.testing.assert_close(model.encode(x), out.mu)


@pytest.mark.parametrize("config,size", [("demo", 32), ("paper", 64)])
def test_named_configs_build(config, size):
    model = build_model(model_args_for(config, "vae", n_lines=3, size=size))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 1, size, size))
    assert out.recon.shape == (1, 3, 1, size, size)
    assert out.mu.shape == (1, 128)


def test_config_errors():
    with pytest.raises(ConfigError, match="64 x 64 maps but the dataset has 32 x 32; use --config demo"):
        model_args_for("paper", "ae", 19, 32)
    with pytest.raises(ConfigError, match="unknown model config"):
        model_args_for("huge", "ae", 19, 32)
    with pytest.raises(ValueError, match="head upsamples"):
        ModelArgs(**{**TINY, "head_channels": (4,)})


def test_masked_cells_get_exactly_zero_gradient():
    torch.manual_seed(0)
    recon = torch.randn(2, 3, 1, 4, 4, requires_grad=True)
    x = torch.randn(2, 3, 1, 4, 4)
    mask = torch.rand(2, 3, 1, 4, 4) < 0.4
    x[mask] = float("nan")  # whatever sits under the mask must not leak in
    loss = masked_loss(recon, x, mask)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert (recon.grad[mask] == 0).all()
    assert (recon.grad[~mask] != 0).all()


def test_masked_loss_values_and_weights():
    recon = torch.zeros(2, 1, 1, 2, 2)
    x = torch.tensor([1.0, 2.0, 3.0, 100.0, 1.0, 1.0, 1.0, 1.0]).reshape(2, 1, 1, 2, 2)
    mask = torch.tensor([False, False, False, True, True, True, True, True]).reshape(2, 1, 1, 2, 2)
    torch.testing.assert_close(masked_loss(recon, x, mask), torch.tensor([(1 + 4 + 9) / 3, 0.0]))
    ivar = torch.full_like(x, 2.0)
    torch.testing.assert_close(masked_loss(recon, x, mask, ivar), torch.tensor([2 * (1 + 4 + 9) / 3, 0.0]))
    # the error model: each weight w becomes w / (1 + w (m recon)^2), i.e. 1 / (1/w + (m recon)^2) ...
    recon = torch.full_like(x, 2.0, requires_grad=True)
    loss = masked_loss(recon, x, mask, ivar, model_error=0.5)
    torch.testing.assert_close(loss, torch.tensor([(1 + 0 + 1) / 3 / (0.5 + 1.0), 0.0]))
    # ... held fixed in the gradient: a weighted least-squares step, not a way to lower the loss by predicting more
    loss.sum().backward()
    expected = torch.where(mask, 0.0, 2 * (2.0 - x) / 1.5 / 3)
    torch.testing.assert_close(recon.grad, expected)


def test_gradient_through_model_ignores_masked_inputs():
    """Changing the target under the mask changes neither the loss nor any parameter gradient."""
    torch.manual_seed(0)
    model = build_model(tiny_args())
    x = torch.randn(2, 5, 1, 16, 16)
    mask = torch.rand_like(x) < 0.3
    grads = []
    for fill in (0.0, 1e3):
        target = torch.where(mask, fill, x)
        model.zero_grad()
        masked_loss(model(torch.where(mask, 0.0, x)).recon, target, mask).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_kl_divergence_closed_form():
    assert torch.equal(kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))
    mu = torch.tensor([[1.0, -2.0]])
    logvar = torch.tensor([[0.5, -1.0]])
    var = logvar.exp()
    expected = 0.5 * (mu ** 2 + var - 1 - logvar).sum(1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)
    # Against torch.distributions: KL(N(mu, sigma) || N(0, 1)) summed over dimensions.
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl_divergence(mu, logvar), ref)


def test_model_pt_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_args("vae")).eval()
    torch.save(model_payload(model, {"note": "test"}), tmp_path / "model.pt")
    loaded, payload = load_model(tmp_path)
    assert payload["model_args"] == asdict(model.args)
    assert payload["config"] == {"note": "test"}
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # load_model lays the weights out channels-last, which picks other convolution kernels:
    # the same model, equal to float32 rounding.
    x = torch.randn(2, 5, 1, 16, 16)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    torch.testing.assert_close(a.recon, b.recon, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.mu, b.mu, rtol=1e-5, atol=1e-6)
