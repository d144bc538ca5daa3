"""Models: exact parameter counts, the registry, seeded init and dropout."""

import pytest
import torch

from suite import components
from suite.spec.config import CNN, MLP, ResNet
from suite.components.models import build_model, count_parameters, parameter_count


def build(cfg, shape=(1, 28, 28), seed=0):
    return build_model(cfg, shape, 10, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg, shape, expected", [
    (MLP(name="mlp", hidden=[256]), (1, 28, 28), 784 * 256 + 256 + 256 * 10 + 10),  # 203,530
    (MLP(name="mlp", hidden=[700] * 6), (1, 28, 28), 3_010_010),
    (MLP(name="mlp", hidden=[1000] * 6), (1, 28, 28), 5_800_010),
    (MLP(name="mlp", hidden=[1000, 500]), (3, 32, 32), 3_578_510),
    (MLP(name="mlp", hidden=[]), (1, 28, 28), 7_850),
    (CNN(name="cnn", channels=[6, 12], padding=1, pool=2), (1, 28, 28), 60 + 660 + 12 * 7 * 7 * 10 + 10),  # 6,610
    (CNN(name="cnn", channels=[6, 16], padding=0, pool=0, hidden=[64]), (1, 28, 28), 60 + 880 + 16 * 24 * 24 * 64 + 64 + 650),
])
def test_exact_parameter_counts(cfg, shape, expected):
    assert count_parameters(build(cfg, shape)) == expected
    state = torch.random.get_rng_state()
    assert parameter_count(cfg, shape, 10) == expected  # what reports show, without building real weights
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("name", components.names("model"))
def test_every_registered_model_builds_and_runs(name):
    cfg = {"mlp": MLP(name="mlp", hidden=[16]), "cnn": CNN(name="cnn", channels=[4], pool=2),
           "resnet": ResNet(name="resnet", depth=8, width=4)}[name]
    out = build(cfg)(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)


def test_init_depends_only_on_the_generator():
    a, b, c = build(MLP(name="mlp", hidden=[8])), build(MLP(name="mlp", hidden=[8])), build(MLP(name="mlp", hidden=[8]), seed=1)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_dropout_only_on_chosen_layers_and_seeded():
    cfg = MLP(name="mlp", hidden=[8, 8, 8], dropout=0.5, dropout_layers=[-2, -1])
    model = build(cfg)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "SeededDropout", "Linear", "ReLU", "SeededDropout", "Linear"]
    x = torch.ones(4, 1, 28, 28)
    model.train()
    first = model(x)
    twin = build(cfg)
    twin.train()
    assert torch.equal(first, twin(x))  # same dropout generator seed, same masks
    # another dropout seed, the same initial weights: other masks
    other = build_model(cfg, (1, 28, 28), 10, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    other.train()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters())) and not torch.equal(first, other(x))
    model.eval()  # evaluation drops nothing: the same network without its dropout layers
    plain = torch.nn.Sequential(*[m for m in model if type(m).__name__ != "SeededDropout"])
    assert torch.equal(model(x), plain(x)) and not torch.equal(model(x), first)


def test_a_cnn_that_shrinks_the_input_away_is_an_error():
    with pytest.raises(ValueError, match="shrinks"):
        build(CNN(name="cnn", channels=[4, 4, 4, 4, 4], kernel_size=3, pool=2))
