"""The PyTorch examples VAE (``pytorch/examples`` ``vae/main.py``) as one process, for
``whole_process.py``: load MNIST, then per epoch train (``loss.item()`` every step, as the
example does) and evaluate the test set, printing both losses.

The example's ``DataLoader`` + ``ToTensor`` is replaced by indexing in-memory tensors (PIL
decoding would dominate and says nothing about either framework), and it writes no images
(scratchae runs with ``--no-figures`` beside it). Everything else is the example's:
784-400-20 ReLU, sigmoid + ``binary_cross_entropy(reduction="sum")`` + KL, Adam 1e-3, batch 128.

    python benchmarks/torch_vae_example.py --data ../shared/data/mnist.npz --epochs 3
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from torch_models import TorchVAE, torch_vae_loss  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="MNIST .npz (x_train, x_test uint8)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    with np.load(args.data) as f:
        x_train = torch.from_numpy(f["x_train"].reshape(-1, 784).astype(np.float32) / 255)
        x_test = torch.from_numpy(f["x_test"].reshape(-1, 784).astype(np.float32) / 255)
    model = TorchVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, args.epochs + 1):
        model.train()
        train_loss = 0.0
        perm = torch.randperm(len(x_train))
        for s in range(0, len(x_train), args.batch_size):
            data = x_train[perm[s:s + args.batch_size]]
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = torch_vae_loss(recon, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            opt.step()
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for s in range(0, len(x_test), args.batch_size):
                data = x_test[s:s + args.batch_size]
                recon, mu, logvar = model(data)
                test_loss += torch_vae_loss(recon, data, mu, logvar).item()
        print(f"epoch {epoch}: train {train_loss / len(x_train):.4f} test {test_loss / len(x_test):.4f}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
