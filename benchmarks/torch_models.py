"""The PyTorch side of ``bench_vae.py``: the same models, objectives and training steps.

The VAE is ``pytorch/examples`` ``vae/main.py`` line for line (its data loader aside:
both frameworks index in-memory float32 tensors, so the benchmark times the models,
not PIL). The AE, DAE and AAE are transcriptions of scratchae's defaults.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class TorchVAE(nn.Module):
    """pytorch/examples vae/main.py, line for line (fc21/fc22 are scratchae's one 400->40)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode_logits(self, z):
        h3 = F.relu(self.fc3(z))
        return self.fc4(h3)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def torch_vae_loss(recon_x, x, mu, logvar):
    """The example's loss_function: BCE summed over pixels and batch, plus the KL."""
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def torch_conv_encoder(code_width, channels=(32, 64)):
    """scratchae's ``encoder_network("conv", ...)`` for 28x28 images: k4 s2 p1 convolutions."""
    layers, c = [nn.Unflatten(1, (1, 28, 28))], 1
    for width in channels:
        layers += [nn.Conv2d(c, width, 4, 2, 1), nn.ReLU()]
        c = width
    side = 28 // 2 ** len(channels)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side * side, code_width))


def torch_conv_decoder(code_width, channels=(32, 64)):
    """scratchae's ``decoder_network("conv", ...)``: Linear, then transposed convolutions."""
    side = 28 // 2 ** len(channels)
    widths = [*reversed(channels), 1]
    layers = [nn.Linear(code_width, widths[0] * side * side), nn.ReLU(),
              nn.Unflatten(1, (widths[0], side, side))]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.Flatten())


class TorchConvVAE(nn.Module):
    """The convolutional VAE of issue 12 / docs/conv.md: encoder Conv(1->32) Conv(32->64)
    Linear(3136 -> 40), decoder Linear(20 -> 3136) ConvT(64->32) ConvT(32->1) -> logits."""

    def __init__(self, latent=20):
        super().__init__()
        self.latent = latent
        self.enc = torch_conv_encoder(2 * latent)
        self.dec = torch_conv_decoder(latent)

    def encode(self, x):
        h = self.enc(x)
        return h[:, :self.latent], h[:, self.latent:]

    def reparameterize(self, mu, logvar):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode_logits(self, z):
        return self.dec(z)


def torch_mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def bce_sum_mean(logits, x):
    """-log p(x|logits), Bernoulli, summed over pixels, mean over the batch (scratchae's)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def torch_mixture_prior(n, device):
    """scratchae's GaussianMixturePrior (10 elongated 2-D Gaussians on a circle)."""
    k, shift, sx, sy = 10, 1.4, 0.5, 0.1
    c = torch.randint(0, k, (n,), device=device)
    a = torch.randn(n, 2, device=device) * torch.tensor([sx, sy], device=device)
    a[:, 0] += shift
    theta = 2 * math.pi * c.float() / k
    cos, sin = torch.cos(theta), torch.sin(theta)
    return torch.stack([a[:, 0] * cos - a[:, 1] * sin, a[:, 0] * sin + a[:, 1] * cos], 1)


class TorchRunner:
    """One PyTorch model + optimizer(s): ``train_epoch(X)`` and ``test_loss(X)``."""

    def __init__(self, kind, args, seed, device):
        torch.manual_seed(seed)
        self.kind, self.args, self.device = kind, args, device
        adam = dict(lr=args.lr)
        if args.torch_fused_adam:
            adam["fused"] = True
        conv = getattr(args, "arch", "mlp") == "conv"
        if kind == "vae":
            self.model = (TorchConvVAE() if conv else TorchVAE()).to(device)
            self.opts = [torch.optim.Adam(self.model.parameters(), **adam)]
        elif kind in ("ae", "dae") and conv:
            self.enc, self.dec = torch_conv_encoder(20).to(device), torch_conv_decoder(20).to(device)
            self.model = nn.ModuleList([self.enc, self.dec])
            self.opts = [torch.optim.Adam(self.model.parameters(), **adam)]
        elif conv:
            raise ValueError("--arch conv is benchmarked for vae, ae and dae")
        elif kind in ("ae", "dae"):
            self.enc, self.dec = torch_mlp([784, 256, 32]).to(device), torch_mlp([32, 256, 784]).to(device)
            self.model = nn.ModuleList([self.enc, self.dec])
            self.opts = [torch.optim.Adam(self.model.parameters(), **adam)]
        else:
            self.enc = torch_mlp([784, 1000, 1000, 2]).to(device)
            self.dec = torch_mlp([2, 1000, 1000, 784]).to(device)
            self.disc = torch_mlp([2, 1000, 1000, 1]).to(device)
            self.model = nn.ModuleList([self.enc, self.dec, self.disc])
            self.opts = [torch.optim.Adam(list(self.enc.parameters()) + list(self.dec.parameters()), **adam),
                         torch.optim.Adam(self.disc.parameters(), **adam),
                         torch.optim.Adam(self.enc.parameters(), **adam)]

    def step(self, data):
        """One training step; returns the loss as a Python float (the example's loss.item())."""
        if self.kind == "vae":
            opt, = self.opts
            opt.zero_grad()
            if self.args.torch_bce == "probs" and not isinstance(self.model, TorchConvVAE):
                recon_batch, mu, logvar = self.model(data)
                loss = torch_vae_loss(recon_batch, data, mu, logvar)
            else:
                mu, logvar = self.model.encode(data)
                logits = self.model.decode_logits(self.model.reparameterize(mu, logvar))
                loss = (F.binary_cross_entropy_with_logits(logits, data, reduction="sum")
                        - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()))
            loss.backward()
            value = loss.item()
            opt.step()
            return value / data.shape[0]
        if self.kind in ("ae", "dae"):
            opt, = self.opts
            opt.zero_grad()
            x_in = data
            if self.kind == "dae":       # masking noise, level 0.5 (scratchae's default)
                x_in = data * (torch.rand_like(data) < 0.5).to(data.dtype)
            loss = bce_sum_mean(self.dec(self.enc(x_in)), data)
            loss.backward()
            opt.step()
            return loss.item()
        # aae: the paper's three phases, as scratchae's train_step
        opt_ae, opt_d, opt_g = self.opts
        n = data.shape[0]
        opt_ae.zero_grad()
        rec = bce_sum_mean(self.dec(self.enc(data)), data)
        rec.backward()
        opt_ae.step()
        opt_d.zero_grad()
        with torch.no_grad():
            code = self.enc(data)
        logits = self.disc(torch.cat([torch_mixture_prior(n, data.device), code]))
        target = torch.cat([torch.ones(n, 1, device=data.device), torch.zeros(n, 1, device=data.device)])
        F.binary_cross_entropy_with_logits(logits, target).backward()
        opt_d.step()
        opt_g.zero_grad()
        logits = self.disc(self.enc(data))
        F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
        opt_g.step()
        return rec.item()

    def train_epoch(self, X, batch_size):
        self.model.train()
        n = X.shape[0]
        perm = torch.randperm(n, device=X.device)
        total = 0.0
        for s in range(0, n, batch_size):
            data = X[perm[s:s + batch_size]]
            total += self.step(data) * data.shape[0]
        return total / n

    @torch.no_grad()
    def test_loss(self, X, batch_size=1000):
        """Mean over test images of the single-sample negative ELBO (VAE) or of
        -log p(x | decoder(encoder(x))) (AE, DAE, AAE), summed over pixels, in nats."""
        self.model.eval()
        total = 0.0
        for s in range(0, X.shape[0], batch_size):
            x = X[s:s + batch_size]
            if self.kind == "vae":
                mu, logvar = self.model.encode(x)
                logits = self.model.decode_logits(self.model.reparameterize(mu, logvar))
                kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
                total += (F.binary_cross_entropy_with_logits(logits, x, reduction="sum") + kl).item()
            else:
                total += F.binary_cross_entropy_with_logits(self.dec(self.enc(x)), x,
                                                            reduction="sum").item()
        return total / X.shape[0]


