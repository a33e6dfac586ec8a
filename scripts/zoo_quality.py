"""Quality check of the built-in benchmark: is it neither trivial nor hopeless?

Trains a small CNN with a fixed high-pass input on one split's known training images
(closed set, cross-entropy, a few CPU minutes), then reports closed-set accuracy on the
split's known test images and, with the maximum softmax probability as the score (the
baseline of open-set recognition papers), AUC and OSCR for each unknown kind.

    python scripts/zoo_quality.py [--root DIR] [--split split1] [--minutes 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from osma_cli.data.decode import load_rgb
from osma_cli.evaluation.metrics import evaluate_open_set
from osma_cli.evaluation.sources import load_pose_split
from osma_cli.zoo.materialise import default_root

GRID = 8


class HighPassCNN(nn.Module):
    """A fixed 3x3 high-pass per channel (image minus its local mean), then a small CNN."""

    def __init__(self, n_classes: int, width: int = 32) -> None:
        super().__init__()
        kernel = -torch.ones(3, 3) / 8
        kernel[1, 1] = 1.0
        self.register_buffer("high_pass", kernel.expand(3, 1, 3, 3).clone())
        layers, c_in = [], 3
        for c_out, stride in [(width, 1), (width, 2), (2 * width, 2), (2 * width, 2), (4 * width, 2)]:
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x * 255, self.high_pass, groups=3)
        return self.head(self.body(x).mean(dim=(2, 3)))


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def random_crops(images, labels, n, crop, rng):
    idx = rng.integers(len(images), size=n)
    out = []
    for i in idx:
        image = images[i]
        top = int(rng.integers((image.shape[0] - crop) // GRID + 1)) * GRID
        left = int(rng.integers((image.shape[1] - crop) // GRID + 1)) * GRID
        out.append(image[top : top + crop, left : left + crop])
    return to_batch(out), torch.as_tensor(labels[idx])


def centre(image: np.ndarray, crop: int) -> np.ndarray:
    top = (image.shape[0] - crop) // 2 // GRID * GRID
    left = (image.shape[1] - crop) // 2 // GRID * GRID
    return image[top : top + crop, left : left + crop]


@torch.no_grad()
def predict(model, images, crop, batch=32):
    model.eval()
    probs = []
    for i in range(0, len(images), batch):
        probs.append(F.softmax(model(to_batch([centre(im, crop) for im in images[i : i + batch]])), 1))
    model.train()
    return torch.cat(probs).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--split", default="split1")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    split = load_pose_split(args.root or default_root(), args.split)

    def load(part):
        return [load_rgb(i.path) for i in part]

    train, val = load(split.train), load(split.val)
    test_known, test_unknown = load(split.test_known), load(split.test_unknown)
    y_train = np.array([i.label for i in split.train])
    y_val = np.array([i.label for i in split.val])
    model = HighPassCNN(split.n_classes)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    start, step, best, best_state = time.perf_counter(), 0, -1.0, None
    while time.perf_counter() - start < args.minutes * 60:
        x, y = random_crops(train, y_train, args.batch, args.crop, rng)
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 50 == 0:
            acc = float((predict(model, val, args.crop).argmax(1) == y_val).mean())
            if acc >= best:
                best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
            print(f"step {step} loss {loss.item():.3f} val acc {acc:.3f}", flush=True)
    if best_state is not None:
        model.load_state_dict(best_state)
    p_known, p_unknown = predict(model, test_known, args.crop), predict(model, test_unknown, args.crop)
    probs = np.concatenate([p_known, p_unknown])
    y_true = np.array([i.label for i in split.test_known] + [-1] * len(test_unknown))
    kinds = np.array([""] * len(test_known) + [i.kind for i in split.test_unknown])
    scores = 1 - probs.max(1)
    tau = float(np.quantile(1 - predict(model, val, args.crop).max(1), 0.95))
    report = evaluate_open_set(y_true, probs.argmax(1), scores, split.n_classes, tau, unknown_kind=kinds).to_dict()
    summary = {
        "split": split.name,
        "classes": split.n_classes,
        "train_images": len(train),
        "steps": step,
        "minutes": args.minutes,
        "crop": args.crop,
        "val_accuracy": best,
        "closed_set_accuracy": report["closed_set_accuracy"],
        "auc": report["auc"],
        "oscr": report["oscr"],
        "per_kind": {
            k: {"n": v["n_unknown"], "auc": v["auc"], "oscr": v["oscr"]} for k, v in report["per_kind"].items()
        },
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
