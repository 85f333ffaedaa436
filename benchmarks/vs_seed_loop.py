"""octbench's trainer against a seed-style training loop, same model, same augmentation policy, one process.

The seed-style loop is what the seed project did: a torch DataLoader over a Dataset that applies per-sample PIL
transforms (random horizontal flip, rotation up to 15 degrees, brightness +-20%), batch 64, fp32. octbench keeps
the images on the device as uint8 and augments whole batches there (`batch-augment` with the same policy), with
bf16 autocast and channels-last on CUDA. Both train the seed CNN on OCTMNIST-shaped synthetic data.

    python benchmarks/vs_seed_loop.py --device cpu --steps 150          # a minute or two on 2 CPU cores
    python benchmarks/vs_seed_loop.py --device cuda --steps 2000 --epoch-images 97477

Prints both images/s, their ratio, the time of one epoch each, and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance

from octbench.cell import machine
from octbench.cell.device import clock, describe, resolve
from octbench.cell.train import Learner, to_device, train, train_stack
from octbench.plugins import PluginHost
from octbench.suite import Train

POLICY = {"hflip": 0.5, "rotate": 15, "brightness": 0.2}


def seed_cnn(host: PluginHost, device: torch.device, seed: int = 0):
    """The seed CNN (seeded) and `batch-augment` with the seed project's policy."""
    torch.manual_seed(seed)
    model = host.create("model", "seed-cnn").build(1, 4, 28).to(device)
    return model, host.create("augmenter", "batch-augment", POLICY)


class SeedStyleDataset(torch.utils.data.Dataset):
    """Per-sample PIL augmentation, as the seed project's torchvision pipeline did."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i, ..., 0])
        if np.random.random() < POLICY["hflip"]:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = image.rotate(np.random.uniform(-POLICY["rotate"], POLICY["rotate"]))
        image = ImageEnhance.Brightness(image).enhance(
            1 + np.random.uniform(-POLICY["brightness"], POLICY["brightness"])
        )
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).unsqueeze(0)
        return x, int(self.labels[i])


def seed_loop(model, images, labels, device, steps, workers, batch=64) -> float:
    """Warm images/s of the seed-style loop over ``steps`` batches (after 10 warm-up batches)."""
    loader = torch.utils.data.DataLoader(
        SeedStyleDataset(images, labels),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    done, start, seen = 0, None, 0
    while done < steps + 10:
        for x, y in loader:
            if done == 10:
                start = clock(device)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            seen += len(y) if done > 10 else 0
            if done >= steps + 10:
                break
    return seen / (clock(device) - start)


def octbench_loop(host, images, labels, device, steps, batch) -> float:
    """Warm images/s of octbench's trainer with its defaults (two epochs of steps*batch images; the first warms)."""
    index = np.arange(steps * batch) % len(labels)
    return octbench_train(host, images[index], labels[index], device, batch, epochs=2).images_per_s


def chosen_fast_path(host, device, batch) -> tuple[bool, bool]:
    """What `octbench run` would train the seed CNN in on this device at this batch size (``octbench.cell.machine``)."""
    model, _ = seed_cnn(host, device)
    bf16 = machine.precision(Train(batch_size=batch), "seed-cnn", model, (1, 28, 28), 4, device) == "bf16"
    return bf16, device.type in ("cpu", "cuda")


def octbench_train(host, x, y, device, batch, epochs):
    model, augment = seed_cnn(host, device)
    config = Train(epochs=epochs, batch_size=batch, device=str(device))
    return train(
        model,
        to_device(x, y, device),
        to_device(x[:512], y[:512], device),
        config=config,
        epochs=epochs,
        augmenters=[augment],
        regularizers=[],
        seed=0,
        num_classes=4,
        fast=chosen_fast_path(host, device, batch),
    )


def octbench_stacked(host, images, labels, device, steps, members, batch=64) -> float:
    """Warm images/s summed over ``members`` seed CNNs trained as one stack, each on its own shuffle of the data
    (two epochs of steps*batch images each; the first warms)."""
    index = np.arange(steps * batch) % len(labels)
    xy = to_device(images[index], labels[index], device)
    val = to_device(images[:512], labels[:512], device)
    config = Train(epochs=2, batch_size=batch, device=str(device))
    fast = chosen_fast_path(host, device, batch)
    learners = []
    for member in range(members):
        model, augment = seed_cnn(host, device, seed=member)
        learners.append(
            Learner(
                model,
                xy,
                val,
                config=config,
                epochs=2,
                augmenters=[augment],
                regularizers=[],
                seed=member,
                num_classes=4,
                fast=fast,
            )
        )
    train_stack(learners, epochs=2)
    failed = [learner.error for learner in learners if learner.error is not None]
    if failed:
        raise RuntimeError(f"a stacked member failed: {failed[0]!r}")
    return sum(learner.result.images_per_s for learner in learners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=150, help="timed training steps per loop")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="seed loop DataLoader workers")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 512], help="octbench batch sizes to time")
    parser.add_argument(
        "--stack", type=int, nargs="*", default=[4], help="cells stacked into one computation at batch 64 each"
    )
    parser.add_argument(
        "--epoch-images",
        type=int,
        default=None,
        help="images in the timed 'whole epoch' (default: 97,477 on CUDA, 10,000 on CPU)",
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.epoch_images is not None and args.epoch_images < 64 * 11:
        parser.error("--epoch-images must be at least 704: the seed-style epoch warms up on 10 batches of 64")

    device = resolve(args.device)
    epoch_images = args.epoch_images or (97_477 if device.type == "cuda" else 10_000)
    host = PluginHost.load()
    data = host.create(
        "dataset", "synthetic-oct", {"n_train": max(epoch_images, 4096), "n_val": 16, "n_test": 16}
    ).load(None)
    images, labels = data.train_images, data.train_labels
    model, _ = seed_cnn(host, device)

    seed_speed = seed_loop(model, images, labels, device, args.steps, args.workers)
    speeds = {batch: octbench_loop(host, images, labels, device, args.steps, batch) for batch in args.batch}
    stacked = {n: octbench_stacked(host, images, labels, device, args.steps, n) for n in args.stack}
    print(f"device: {describe(device)}")
    print(
        f"seed-style loop (DataLoader, {args.workers} workers, PIL per sample, batch 64, fp32): "
        f"{seed_speed:,.0f} images/s"
    )
    for batch, speed in speeds.items():
        print(f"octbench trainer (defaults, batch {batch}): {speed:,.0f} images/s  = {speed / seed_speed:.1f}x")
    for members, speed in stacked.items():
        print(
            f"octbench, {members} cells stacked (batch 64 each): {speed:,.0f} images/s summed = "
            f"{speed / seed_speed:.1f}x"
        )

    start = time.perf_counter()
    seed_loop(model, images[:epoch_images], labels[:epoch_images], device, epoch_images // 64 - 10, args.workers)
    seed_epoch = time.perf_counter() - start
    start = time.perf_counter()
    octbench_train(host, images[:epoch_images], labels[:epoch_images], device, 64, epochs=1)
    octbench_epoch = time.perf_counter() - start
    print(
        f"one epoch of {epoch_images:,} images at batch 64: "
        f"seed-style {seed_epoch:.1f} s, octbench {octbench_epoch:.1f} s"
    )
    print(
        json.dumps(
            {
                "device": describe(device),
                "steps": args.steps,
                "workers": args.workers,
                "seed_loop_images_per_s": round(seed_speed),
                "octbench_images_per_s": {b: round(s) for b, s in speeds.items()},
                "stacked_images_per_s": {n: round(s) for n, s in stacked.items()},
                "precision": "bf16" if chosen_fast_path(host, device, 64)[0] else "fp32",
                "ratio_batch64": round(speeds.get(64, float("nan")) / seed_speed, 2),
                "epoch_images": epoch_images,
                "seed_epoch_s": round(seed_epoch, 2),
                "octbench_epoch_s": round(octbench_epoch, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
