"""Models: an MLP and a small CNN, built from their typed configs.

Weights are initialised from an explicit generator (PyTorch's default scheme, so the
numbers are distributed as `nn.Linear` would draw them) and dropout masks come from
another, so that seed k means the same draws in every variant and nothing touches the
global RNG. The registry (`suite.components`) maps a config name to its builder; plug-in models
are built, initialised and seeded the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import get
from ..spec.config import CNN, MLP, ResNet

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


class SeededDropout(nn.Module):
    """Inverted dropout whose masks come from `generator` (set by `build_model`)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)

    def extra_repr(self):
        return f"p={self.p}"


NORMS_1D = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
NORMS_2D = {"batch": nn.BatchNorm2d, "layer": lambda channels: nn.GroupNorm(1, channels)}  # layer norm over C x H x W


def _norm(kind: str, table: dict, width: int) -> list[nn.Module]:
    return [] if kind == "none" else [table[kind](width)]


def build_mlp(cfg: MLP, in_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Flatten -> [Linear (-> norm) -> activation (-> dropout)] per hidden width -> Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    dropped = set(range(len(cfg.hidden))) if cfg.dropout_layers is None else {i % len(cfg.hidden) for i in cfg.dropout_layers}
    for i, hidden in enumerate(cfg.hidden):
        layers += [nn.Linear(width, hidden), *_norm(cfg.norm, NORMS_1D, hidden), ACTIVATIONS[cfg.activation]()]
        if cfg.dropout and i in dropped:
            layers.append(SeededDropout(cfg.dropout))
        width = hidden
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


def build_cnn(cfg: CNN, in_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """[Conv k x k -> activation (-> max-pool)] per channel count -> flatten -> [Linear -> activation] -> Linear."""
    if len(in_shape) != 3:
        raise ValueError(f"a CNN needs image inputs (C x H x W), got shape {in_shape}")
    channels, size = in_shape[0], in_shape[1:]
    layers: list[nn.Module] = []
    for out in cfg.channels:
        layers += [nn.Conv2d(channels, out, cfg.kernel_size, padding=cfg.padding), *_norm(cfg.norm, NORMS_2D, out),
                   ACTIVATIONS[cfg.activation]()]
        size = tuple(s + 2 * cfg.padding - cfg.kernel_size + 1 for s in size)
        if cfg.pool:
            layers.append(nn.MaxPool2d(cfg.pool))
            size = tuple(s // cfg.pool for s in size)
        if min(size) < 1:
            raise ValueError(f"the CNN shrinks a {in_shape[1]}x{in_shape[2]} input to nothing; use padding or fewer layers")
        channels = out
    layers.append(nn.Flatten())
    width = channels * math.prod(size)
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), *_norm(cfg.norm, NORMS_1D, hidden), ACTIVATIONS[cfg.activation]()]
        if cfg.dropout:
            layers.append(SeededDropout(cfg.dropout))
        width = hidden
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


class Block(nn.Module):
    """A basic residual block: conv-norm-act-conv-norm plus the shortcut (a 1x1 projection where the shape changes), then act."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, activation: str):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=norm == "none"), *_norm(norm, NORMS_2D, cout),
                                  ACTIVATIONS[activation](), nn.Conv2d(cout, cout, 3, 1, 1, bias=norm == "none"),
                                  *_norm(norm, NORMS_2D, cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=norm == "none"), *_norm(norm, NORMS_2D, cout))
        self.out = ACTIVATIONS[activation]()

    def forward(self, x):
        return self.out(self.body(x) + self.shortcut(x))


def build_resnet(cfg: ResNet, in_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Stem -> 3 stages of (depth - 2) / 6 blocks -> global average pool -> Linear."""
    if len(in_shape) != 3:
        raise ValueError(f"a ResNet needs image inputs (C x H x W), got shape {in_shape}")
    blocks, w = (cfg.depth - 2) // 6, cfg.width
    layers: list[nn.Module] = [nn.Conv2d(in_shape[0], w, 3, 1, 1, bias=cfg.norm == "none"), *_norm(cfg.norm, NORMS_2D, w),
                               ACTIVATIONS[cfg.activation]()]
    cin = w
    for stage, cout in enumerate((w, 2 * w, 4 * w)):
        for i in range(blocks):
            layers.append(Block(cin, cout, 2 if stage and not i else 1, cfg.norm, cfg.activation))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_outputs)]
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, gen: torch.Generator, scheme: str = "default") -> None:
    """Linear and conv weights from `gen`; norm layers start at weight 1, bias 0 (PyTorch's).

    default: PyTorch's (Kaiming-uniform with a=sqrt(5); bias U(+-1/sqrt(fan_in))); kaiming:
    Kaiming-normal for ReLU (fan_in), xavier: Glorot-uniform, orthogonal: orthogonal matrices
    (gain 1); those three start biases at 0.
    """
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            if scheme == "default":
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=gen)
                fan_in = module.weight[0].numel()
                if module.bias is not None:
                    module.bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=gen)
                continue
            INITS[scheme](module.weight, generator=gen)
            if module.bias is not None:
                module.bias.zero_()


INITS = {
    "kaiming": lambda w, generator: nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator),
    "xavier": lambda w, generator: nn.init.xavier_uniform_(w, generator=generator),
    "orthogonal": lambda w, generator: nn.init.orthogonal_(w, generator=generator),
}


def build_model(cfg, in_shape, num_outputs, init_gen: torch.Generator, dropout_gen: torch.Generator | None = None):
    """A freshly initialised model (on the CPU; move it with `.to(device)`)."""
    model = get("model", cfg.name).load()(cfg, tuple(in_shape), num_outputs)
    init_weights(model, init_gen, getattr(cfg, "init", "default"))
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.generator = dropout_gen
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_count(cfg, in_shape, num_outputs) -> int:
    """Trainable parameters of the model `cfg` builds, without allocating or initialising it."""
    with torch.device("meta"):
        return count_parameters(get("model", cfg.name).load()(cfg, tuple(in_shape), num_outputs))
