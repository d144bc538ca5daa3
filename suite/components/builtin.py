"""The built-in components: one record each, registered when the registry is first read (imports no torch)."""

from __future__ import annotations

from ..spec import config as c
from . import Component, register

MODELS = [
    Component("model", "mlp", "suite.components.models:build_mlp", "multi-layer perceptron on flattened inputs", c.MLP),
    Component("model", "cnn", "suite.components.models:build_cnn", "convolutions (optional max-pool), then linear layers", c.CNN),
    Component("model", "resnet", "suite.components.models:build_resnet", "He et al.'s CIFAR ResNet (images only)", c.ResNet),
]

# (examples, share of the largest class) of each full test split, for telling a collapsed run (one that predicts a
# single class) from a trained one when the run did not log them itself: MNIST's test split holds 1,135 ones among
# 10,000 images; CIFAR-10 and Fashion-MNIST 1,000 per class (tests/test_data.py counts them in the real files).
DATASETS = [
    Component("dataset", "mnist", "suite.components.data:mnist", "handwritten digits, 28x28 grey, 60,000 + 10,000",
              task="classification", inputs=((1, 28, 28), 10), test_split=(10000, 0.1135), train_split=60000),
    Component("dataset", "fashion_mnist", "suite.components.data:fashion_mnist", "Zalando's clothing images, 28x28 grey, 60,000 + 10,000",
              task="classification", inputs=((1, 28, 28), 10), test_split=(10000, 0.1), train_split=60000,
              classes=("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")),
    Component("dataset", "cifar10", "suite.components.data:cifar10", "32x32 colour images in 10 classes, 50,000 + 10,000",
              task="classification", inputs=((3, 32, 32), 10), test_split=(10000, 0.1), train_split=50000,
              classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    Component("dataset", "quadratic", "suite.components.data:quadratic", "synthetic regression y = x^2 + noise (1-d input)",
              task="regression", inputs=((1,), 1), train_split=6000),
]

# Every field of an optimizer's config but `name` is a constructor argument (tests/test_train.py checks that each arrives).
OPTIMIZERS = [
    Component("optimizer", "sgd", "torch.optim:SGD", "plain stochastic gradient descent", c.SGD),
    Component("optimizer", "momentum", "torch.optim:SGD", "SGD with heavy-ball or Nesterov momentum", c.Momentum),
    Component("optimizer", "rmsprop", "torch.optim:RMSprop", "RMSprop", c.RMSprop),
    Component("optimizer", "adam", "torch.optim:Adam", "Adam (coupled L2 weight decay)", c.Adam),
    Component("optimizer", "adamw", "torch.optim:AdamW", "AdamW (decoupled weight decay)", c.AdamW),
    Component("optimizer", "adagrad", "torch.optim:Adagrad", "Adagrad", c.Adagrad),
    Component("optimizer", "nadam", "torch.optim:NAdam", "Adam with Nesterov momentum", c.NAdam),
    Component("optimizer", "radam", "torch.optim:RAdam", "rectified Adam", c.RAdam),
    Component("optimizer", "adadelta", "torch.optim:Adadelta", "Adadelta", c.Adadelta),
]

# The built-in schedules share one parameter class (config.Schedule) and one function (train.lr_factor).
SCHEDULES = [Component("schedule", name, "suite.execute.train:lr_factor", doc, c.Schedule) for name, doc in {
    "constant": "the base learning rate throughout",
    "step": "multiply by gamma every step_every epochs",
    "cosine": "half a cosine from 1 down to min_factor",
    "warmup_cosine": "linear warm-up from 0, then cosine",
    "one_cycle": "up from start_factor to 1 by peak_at, then down",
}.items()]

# Applied in this order (data.augment_batch), one draw per image; the value is the field's (config.Augment).
AUGMENTATIONS = [
    Component("augmentation", "rotation", "suite.components.data:rotate", "random rotation by ±value degrees", float),
    Component("augmentation", "hflip", "suite.components.data:hflip", "horizontal flip of half the images", bool),
    Component("augmentation", "crop_pad", "suite.components.data:shift_crop", "random crop after padding by value pixels", int),
]

for _component in (*MODELS, *DATASETS, *OPTIMIZERS, *SCHEDULES, *AUGMENTATIONS):
    register(_component)
