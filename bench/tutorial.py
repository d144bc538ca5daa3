"""The tutorial's training loop, exactly as such tutorials write it: the baseline `make bench` compares with.

    python bench/tutorial.py --data-dir ../shared/data --weight-decay 0.002 --seed 0

torchvision's MNIST over all 60,000 training images with per-sample ToTensor + Normalize,
DataLoader(batch_size=64, shuffle=True, num_workers=0), an MLP 784-700x6-10 with ReLU,
Adam(lr=0.01, weight_decay=wd), one epoch, then the test set with batch 1000. One process per
run, torch's default thread count, no MLflow. Prints one JSON line: wall seconds, test accuracy.
Deliberately not part of the suite (imports nothing from it).
"""

import argparse
import json
import time

start = time.perf_counter()

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(args.data_dir, train=True, download=False, transform=transform)
    test = datasets.MNIST(args.data_dir, train=False, download=False, transform=transform)
    train_loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=0)
    test_loader = DataLoader(test, batch_size=1000, shuffle=False, num_workers=0)

    layers = [nn.Flatten(), nn.Linear(784, 700), nn.ReLU()]
    for _ in range(5):
        layers += [nn.Linear(700, 700), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(700, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss()

    train_start = time.perf_counter()
    model.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - train_start

    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_loader:
            correct += (model(x).argmax(1) == y).sum().item()
    print(json.dumps({"seed": args.seed, "weight_decay": args.weight_decay, "test_acc": correct / len(test),
                      "train_seconds": round(train_seconds, 3), "wall_seconds": round(time.perf_counter() - start, 3),
                      "threads": torch.get_num_threads(), "samples": len(train)}))


if __name__ == "__main__":
    main()
