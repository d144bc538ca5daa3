"""A from-scratch NumPy multilayer perceptron, used as an independent oracle for the torch MLP.

Nothing here imports torch. The forward pass, the softmax cross-entropy and the backward pass
are written out by hand (micrograd-style, but vectorised over the batch) in float64, so the
tests can check that `suite.components.models.build_mlp` computes what an MLP should and that autograd's
gradients agree with the chain rule applied layer by layer.

Conventions follow PyTorch's `nn.Linear`: `weights[i]` has shape (out, in) and a layer computes
`z = a @ W.T + b`. The activation is applied after every hidden layer; the output layer is linear.
A bias may be `None` (the layer has none; its gradient is then `None` too).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ACTIVATIONS = ("relu", "tanh", "sigmoid")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z), evaluated without overflow for large |z|."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _activate(z: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "tanh":
        return np.tanh(z)
    if activation == "sigmoid":
        return _sigmoid(z)
    raise ValueError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")


def _activation_derivative(z: np.ndarray, a: np.ndarray, activation: str) -> np.ndarray:
    """d a / d z, elementwise, given the pre-activation z and the activation a = f(z).

    relu:    f'(z) = 1 if z > 0 else 0   (0 at z = 0, as PyTorch does)
    tanh:    f'(z) = 1 - tanh(z)^2       = 1 - a^2
    sigmoid: f'(z) = s(z) (1 - s(z))     = a (1 - a)
    """
    if activation == "relu":
        return (z > 0).astype(z.dtype)
    if activation == "tanh":
        return 1.0 - a * a
    if activation == "sigmoid":
        return a * (1.0 - a)
    raise ValueError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")


def _check_layers(x: np.ndarray, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray | None]) -> None:
    if x.ndim != 2:
        raise ValueError(f"x must be (batch, features), got shape {x.shape}")
    if len(weights) == 0:
        raise ValueError("need at least one layer")
    if len(biases) != len(weights):
        raise ValueError(f"{len(weights)} weight matrices but {len(biases)} biases")
    width = x.shape[1]
    for i, (w, b) in enumerate(zip(weights, biases)):
        if w.ndim != 2 or w.shape[1] != width:
            raise ValueError(f"layer {i}: weight shape {w.shape} does not take {width} inputs")
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"layer {i}: bias shape {b.shape}, expected ({w.shape[0]},)")
        width = w.shape[0]


def forward(x, weights, biases, activation: str):
    """The MLP's output for a batch, and the cache `backward` needs.

    x: (batch, in). For each layer i: z_i = a_{i-1} @ W_i^T + b_i, with a_{-1} = x; a_i = f(z_i) on
    hidden layers, a_i = z_i on the last. Returns (output of shape (batch, out), cache).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")
    x = np.asarray(x, dtype=np.float64)
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    biases = [None if b is None else np.asarray(b, dtype=np.float64) for b in biases]
    _check_layers(x, weights, biases)

    inputs, pres, outs = [], [], []  # per layer: its input a_{i-1}, pre-activation z_i, output a_i
    a = x
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        inputs.append(a)
        z = a @ w.T
        if b is not None:
            z = z + b
        a = z if i == last else _activate(z, activation)
        pres.append(z)
        outs.append(a)
    cache = {"activation": activation, "weights": weights, "has_bias": [b is not None for b in biases],
             "inputs": inputs, "pres": pres, "outs": outs}
    return a, cache


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient w.r.t. the logits.

    loss_n = logsumexp(l_n) - l_n[y_n], computed as m + log(sum exp(l_n - m)) with m = max(l_n)
    so that nothing overflows. d loss / d l_n = (softmax(l_n) - onehot(y_n)) / batch.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, classes), got shape {logits.shape}")
    n, k = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must be ({n},), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must be integers in [0, {k})")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    rows = np.arange(n)
    loss = -log_probs[rows, labels].mean()
    dlogits = np.exp(log_probs)
    dlogits[rows, labels] -= 1.0
    dlogits /= n
    return float(loss), dlogits


def backward(dout, cache):
    """Gradients of a scalar loss w.r.t. every weight and bias, given dL/d(output) of shape (batch, out).

    Walking from the last layer back, with g = dL/dz_i:
      dL/dW_i = g^T @ a_{i-1}          (out, in)
      dL/db_i = sum over the batch of g
      dL/da_{i-1} = g @ W_i,  then  dL/dz_{i-1} = dL/da_{i-1} * f'(z_{i-1})
    """
    activation = cache["activation"]
    weights, inputs, pres, outs = cache["weights"], cache["inputs"], cache["pres"], cache["outs"]
    g = np.asarray(dout, dtype=np.float64)
    if g.shape != outs[-1].shape:
        raise ValueError(f"dout has shape {g.shape}, the output has {outs[-1].shape}")
    dweights: list = [None] * len(weights)
    dbiases: list = [None] * len(weights)
    for i in range(len(weights) - 1, -1, -1):
        dweights[i] = g.T @ inputs[i]
        if cache["has_bias"][i]:
            dbiases[i] = g.sum(axis=0)
        if i > 0:
            da = g @ weights[i]
            g = da * _activation_derivative(pres[i - 1], outs[i - 1], activation)
    return dweights, dbiases


def mlp_loss_and_grads(x, labels, weights, biases, activation: str):
    """Mean softmax cross-entropy of the MLP on (x, labels), with its gradient for every weight and bias."""
    logits, cache = forward(x, weights, biases, activation)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    dweights, dbiases = backward(dlogits, cache)
    return loss, dweights, dbiases
