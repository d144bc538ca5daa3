"""The NumPy reference MLP: a hand-worked example, agreement with the torch MLP, finite differences."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from suite import reference
from suite.spec.config import MLP
from suite.components.models import build_model

ACTS = ("relu", "tanh", "sigmoid")


# ---------------------------------------------------------------- the classic hand check

def test_hand_worked_tanh_network():
    # layer 1: [2,4].[3,5] = 26, [4,-5].[3,5] = -13  -> tanh ~ [1, -1]
    # layer 2: [-1,1].[1,-1] = -2, [2,2].[1,-1] = 0  -> [tanh(-2), 0]
    # output:  -3 tanh(-2) + 7 * 0 = 3 tanh(2)
    x = np.array([[3.0, 5.0]])
    weights = [np.array([[2.0, 4.0], [4.0, -5.0]]), np.array([[-1.0, 1.0], [2.0, 2.0]]), np.array([[-3.0, 7.0]])]
    out, _ = reference.forward(x, weights, [None, None, None], "tanh")
    assert out.shape == (1, 1)
    assert out[0, 0] == pytest.approx(2.8920, abs=1e-4)
    assert out[0, 0] == pytest.approx(-3 * math.tanh(-2), abs=1e-9)
    # the exact closed form, without rounding tanh(26) and tanh(-13) to +-1
    h1 = (math.tanh(26), math.tanh(-13))
    h2 = (math.tanh(-h1[0] + h1[1]), math.tanh(2 * h1[0] + 2 * h1[1]))
    assert out[0, 0] == pytest.approx(-3 * h2[0] + 7 * h2[1], rel=1e-14)


def test_hand_worked_gradient_of_a_single_tanh_neuron():
    # y = w2 * tanh(w1 x + b1) + b2, dL/dy = 1: dw2 = tanh(z), dw1 = w2 (1 - tanh(z)^2) x
    x, w1, b1, w2, b2 = 0.5, 1.5, -0.25, 2.0, 0.1
    z = w1 * x + b1
    out, cache = reference.forward(np.array([[x]]), [np.array([[w1]]), np.array([[w2]])],
                                   [np.array([b1]), np.array([b2])], "tanh")
    assert out[0, 0] == pytest.approx(w2 * math.tanh(z) + b2, rel=1e-14)
    dw, db = reference.backward(np.ones((1, 1)), cache)
    assert dw[1][0, 0] == pytest.approx(math.tanh(z), rel=1e-14)
    assert db[1][0] == pytest.approx(1.0, rel=1e-14)
    assert dw[0][0, 0] == pytest.approx(w2 * (1 - math.tanh(z) ** 2) * x, rel=1e-14)
    assert db[0][0] == pytest.approx(w2 * (1 - math.tanh(z) ** 2), rel=1e-14)


# ---------------------------------------------------------------- the oracle against torch

def torch_case(activation, seed=0):
    """A double-precision torch MLP (16 -> 7 -> 5 -> 3), a batch of 6, labels, and its loss gradients."""
    model = build_model(MLP(name="mlp", hidden=[7, 5], activation=activation), (1, 4, 4), 3,
                        torch.Generator().manual_seed(seed)).double()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(7, 16), (5, 7), (3, 5)]
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return model, linears, x, labels, logits.detach(), loss.detach()


def as_numpy(linears):
    weights = [m.weight.detach().numpy().copy() for m in linears]
    biases = [m.bias.detach().numpy().copy() for m in linears]
    return weights, biases


@pytest.mark.parametrize("activation", ACTS)
def test_forward_and_gradients_match_torch(activation):
    model, linears, x, labels, logits, loss = torch_case(activation)
    weights, biases = as_numpy(linears)
    x_np = x.reshape(len(x), -1).numpy()

    out, cache = reference.forward(x_np, weights, biases, activation)
    np.testing.assert_allclose(out, logits.numpy(), rtol=1e-10, atol=1e-12)

    np_loss, dweights, dbiases = reference.mlp_loss_and_grads(x_np, labels.numpy(), weights, biases, activation)
    assert np_loss == pytest.approx(loss.item(), rel=1e-12)
    assert len(dweights) == len(dbiases) == 3
    for i, m in enumerate(linears):
        assert dweights[i].shape == tuple(m.weight.shape)
        np.testing.assert_allclose(dweights[i], m.weight.grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=f"layer {i} weight")
        np.testing.assert_allclose(dbiases[i], m.bias.grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=f"layer {i} bias")
        assert np.abs(m.weight.grad.numpy()).max() > 1e-6  # the gradients compared are not all zero


@pytest.mark.parametrize("activation", ACTS)
def test_comparison_catches_a_perturbed_weight(activation):
    model, linears, x, labels, _, _ = torch_case(activation)
    weights, biases = as_numpy(linears)
    x_np = x.reshape(len(x), -1).numpy()
    with torch.no_grad():
        linears[1].weight[2, 3] += 1e-4
    model.zero_grad()
    logits = model(x)
    F.cross_entropy(logits, labels).backward()

    out, _ = reference.forward(x_np, weights, biases, activation)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(out, logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    _, dweights, _ = reference.mlp_loss_and_grads(x_np, labels.numpy(), weights, biases, activation)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(dweights[0], linears[0].weight.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("activation, other", [("relu", "tanh"), ("tanh", "sigmoid"), ("sigmoid", "relu")])
def test_comparison_catches_the_wrong_activation(activation, other):
    _, linears, x, _, logits, _ = torch_case(activation)
    weights, biases = as_numpy(linears)
    out, _ = reference.forward(x.reshape(len(x), -1).numpy(), weights, biases, other)
    assert np.abs(out - logits.numpy()).max() > 1e-3


# ---------------------------------------------------------------- finite differences, no torch

def numeric_grad(f, param, eps=1e-6):
    """Central differences of the scalar f() w.r.t. every entry of `param` (changed in place, then restored)."""
    grad = np.zeros_like(param)
    for idx in np.ndindex(param.shape):
        old = param[idx]
        param[idx] = old + eps
        up = f()
        param[idx] = old - eps
        down = f()
        param[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("activation", ACTS)
def test_backward_matches_finite_differences(activation):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3))
    labels = np.array([0, 1, 1, 0])
    weights = [rng.normal(size=(4, 3)), rng.normal(size=(3, 4)), rng.normal(size=(2, 3))]
    biases = [rng.normal(size=4), None, rng.normal(size=2)]  # the middle layer has no bias

    _, cache = reference.forward(x, weights, biases, activation)
    if activation == "relu":  # keep every unit away from the kink, where differences are meaningless
        assert min(np.abs(z).min() for z in cache["pres"][:-1]) > 1e-3
        assert any((z < 0).any() for z in cache["pres"][:-1])  # and some units are off

    def loss():
        return reference.mlp_loss_and_grads(x, labels, weights, biases, activation)[0]

    _, dweights, dbiases = reference.mlp_loss_and_grads(x, labels, weights, biases, activation)
    assert dbiases[1] is None
    for i, w in enumerate(weights):
        np.testing.assert_allclose(dweights[i], numeric_grad(loss, w), rtol=1e-6, atol=1e-9, err_msg=f"weight {i}")
    for i, b in enumerate(biases):
        if b is not None:
            np.testing.assert_allclose(dbiases[i], numeric_grad(loss, b), rtol=1e-6, atol=1e-9, err_msg=f"bias {i}")


def test_softmax_cross_entropy_gradient_and_value():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4))
    labels = np.array([3, 0, 1, 1, 2])
    loss, dlogits = reference.softmax_cross_entropy(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(probs[np.arange(5), labels]).mean(), rel=1e-13)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-15)
    np.testing.assert_allclose(
        dlogits, numeric_grad(lambda: reference.softmax_cross_entropy(logits, labels)[0], logits), rtol=1e-6, atol=1e-10)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0], [-1000.0, -1000.0 + math.log(3)]])
    loss, dlogits = reference.softmax_cross_entropy(logits, np.array([0, 0]))
    # row 1: loss ~ 0; row 2: log(1 + 3) = log 4
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert loss == pytest.approx(math.log(4) / 2, rel=1e-12)
    np.testing.assert_allclose(dlogits, [[0.0, 0.0], [(0.25 - 1) / 2, 0.75 / 2]], atol=1e-15)


def test_sigmoid_is_stable_and_correct_at_extremes():
    out, _ = reference.forward(np.array([[-800.0], [0.0], [800.0]]), [np.array([[1.0]]), np.array([[1.0]])],
                               [None, None], "sigmoid")
    np.testing.assert_allclose(out[:, 0], [0.0, 0.5, 1.0], atol=1e-300)


def test_rejects_bad_inputs():
    w = [np.ones((2, 3)), np.ones((1, 2))]
    with pytest.raises(ValueError, match="activation"):
        reference.forward(np.ones((1, 3)), w, [None, None], "gelu")
    with pytest.raises(ValueError, match="inputs"):
        reference.forward(np.ones((1, 4)), w, [None, None], "relu")
    with pytest.raises(ValueError, match="labels"):
        reference.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
