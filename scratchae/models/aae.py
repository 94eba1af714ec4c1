"""The adversarial autoencoder (Makhzani et al. 2015). Derivations: ``docs/aae.md``."""
from __future__ import annotations

from .. import backend as B
from .. import losses
from ..stochastic import make_prior
from .base import (CONV_CHANNELS, AutoencoderBase, Objective, arch_config, decoder_network,
                   encoder_network, mlp, reconstruction)

__all__ = ["AdversarialAutoencoder"]


class AdversarialAutoencoder(AutoencoderBase):
    r"""Deterministic autoencoder whose codes are pushed onto a prior by a discriminator.

    Each minibatch runs three phases, each with its own optimizer:

    1. **reconstruction** (encoder + decoder): ``L_rec = -log p(x | g(f(x)))``.
    2. **discriminator** D on ``[prior samples; codes]`` with targets ``[1; 0]``::

           L_D = (1/2N) sum bce(D([z_p; f(x)]), [1; 0])

       Backward: ``dlogits = (sigmoid(logits) - t) / 2N``; ``D.backward(dlogits)``;
       the codes are constants here (the encoder is not updated).
    3. **generator** (the encoder), non-saturating: ``L_G = (1/N) sum bce(D(f(x)), 1)``.
       Backward goes *through* the discriminator, whose parameters are not updated::

           dlogits = (sigmoid(D(f(x))) - 1) / N
           dcode   = D.backward(dlogits)        (D's grads are touched but never stepped)
           encoder.backward(dcode)              (parameter gradients only: x is data)

    With ``supervised=True`` labels enter the adversarial regularisation (the paper's
    section "incorporating label information in the adversarial regularization", without
    its extra class for unlabelled data): D also sees the one-hot label, and each prior
    sample comes from the label's part of the prior (a mixture component, or a stretch of
    the swiss roll); it needs one of those two priors with ``n_classes`` parts.

    References
    ----------
    A. Makhzani, J. Shlens, N. Jaitly, I. Goodfellow, B. Frey. Adversarial Autoencoders.
    arXiv:1511.05644, 2015.
    """

    kind = "aae"

    def __init__(self, sizes=(784, 1000, 1000, 2), activation="relu", likelihood="bernoulli",
                 disc_sizes=(1000, 1000), prior="mixture", supervised=False, n_classes=10,
                 rng=None, dtype="float32", arch="mlp", channels=CONV_CHANNELS, image_shape=None):
        super().__init__()
        sizes = [int(s) for s in sizes]
        self.config = {"kind": self.kind, "input_dim": sizes[0], "sizes": sizes,
                       "activation": activation, "likelihood": likelihood,
                       "disc_sizes": [int(s) for s in disc_sizes], "prior": prior,
                       "supervised": bool(supervised), "n_classes": int(n_classes), "dtype": dtype,
                       **arch_config(arch, channels, image_shape, sizes[0])}
        self.likelihood, self.rng = likelihood, rng
        self.latent_dim = sizes[-1]
        self.prior = make_prior(prior, sizes[-1])
        self.supervised, self.n_classes = bool(supervised), int(n_classes)
        if supervised and self.prior.n_classes != self.n_classes:
            raise ValueError(f"supervised AAE: prior {prior!r} has {self.prior.n_classes} label-conditioned "
                             f"parts, not n_classes={n_classes}; use prior 'mixture' or 'swiss_roll'")
        net = dict(arch=arch, activation=activation, rng=rng, dtype=dtype, channels=channels,
                   image_shape=image_shape)
        self.encoder = encoder_network(sizes=sizes, code_width=sizes[-1], **net)
        self.decoder = decoder_network(sizes=sizes, likelihood=likelihood, **net)
        d_in = sizes[-1] + (self.n_classes if supervised else 0)
        self.discriminator = mlp([d_in, *disc_sizes, 1], activation, rng, dtype)

    def configure_optimizers(self, name="adam", lr=1e-3, disc_lr=None, gen_lr=None, **kw):
        """Three optimizers, one per phase, each over the parameter slots it trains: the
        encoder has two (reconstruction and generator), each with its own state (``docs/aae.md``)."""
        from ..optim import make_optimizer
        encoder = self.encoder.parameter_slots("encoder")
        self.optimizers = {
            "autoencoder": make_optimizer(name, encoder + self.decoder.parameter_slots("decoder"),
                                          lr=lr, **kw),
            "discriminator": make_optimizer(name, self.discriminator.parameter_slots("discriminator"),
                                            lr=disc_lr or lr, **kw),
            "generator": make_optimizer(name, encoder, lr=gen_lr or lr, **kw),
        }
        return self

    # --- helpers -------------------------------------------------------------------------
    def discriminator_input(self, z, labels=None):
        """What D sees for codes z: z, and with ``supervised=True`` the one-hot labels beside it."""
        if not self.supervised:
            return z
        if labels is None:
            raise ValueError("supervised AAE: pass labels")
        xp = B.namespace(z)
        classes = xp.arange(self.n_classes, device=B.device_of(z))
        onehot = xp.astype(labels[:, None] == classes[None, :], z.dtype)
        return xp.concat([z, onehot], axis=1)

    # --- phase 1: reconstruction -----------------------------------------------------------
    def loss(self, x, y=None):
        """Reconstruction phase: terms {"recon", "loss"} and dL/d(decoder output)."""
        self.check_batch(x)
        code = self.encoder(x)
        out = self.decoder(code)
        recon, dout = reconstruction(out, x, self.likelihood)
        return Objective(recon, {"recon": recon, "loss": recon}, {"out": dout}, {"code": code, "out": out})

    def backward(self, obj):
        return self.encoder.backward(self.decoder.backward(obj.grads["out"]))

    # --- phase 2: discriminator ------------------------------------------------------------
    def discriminator_loss(self, x, z_prior=None, labels=None):
        """D on [prior samples; codes] with targets [1; 0]. Codes are constants here."""
        self.check_batch(x)
        xp = B.namespace(x)
        n = x.shape[0]
        code = self.encoder(x)
        self.encoder.clear_cache()          # the encoder is not trained in this phase
        if z_prior is None:
            z_prior = self.prior.sample(n, self.rng, labels, B.dtype_name(code.dtype))
        lab2 = None if labels is None else xp.concat([labels, labels])
        inp = self.discriminator_input(xp.concat([z_prior, code], axis=0), lab2)
        logits = self.discriminator(inp)
        ones = xp.ones((n, 1), dtype=logits.dtype, device=B.device_of(logits))
        target = xp.concat([ones, 0.0 * ones], axis=0)
        value, dlogits = losses.bce_with_logits(logits, target)
        return Objective(value, {"disc": value}, {"logits": dlogits}, {"logits": logits})

    def backward_discriminator(self, obj):
        self.discriminator.backward(obj.grads["logits"])

    # --- phase 3: generator (the encoder, through D) ----------------------------------------
    def generator_loss(self, x, labels=None):
        """Non-saturating generator loss ``bce(D(f(x)), 1)``."""
        self.check_batch(x)
        xp = B.namespace(x)
        code = self.encoder(x)
        logits = self.discriminator(self.discriminator_input(code, labels))
        ones = xp.ones(tuple(logits.shape), dtype=logits.dtype, device=B.device_of(logits))
        value, dlogits = losses.bce_with_logits(logits, ones)
        return Objective(value, {"gen": value}, {"logits": dlogits}, {"code": code, "logits": logits})

    def backward_generator(self, obj):
        dcode = self.discriminator.backward(obj.grads["logits"])
        if self.supervised:
            dcode = dcode[:, :self.latent_dim]      # no gradient to the (constant) label one-hot
        return self.encoder.backward(dcode)

    # --- one minibatch: the paper's three phases --------------------------------------------
    def train_step(self, x, y=None):
        if self.supervised and y is None:
            raise ValueError("supervised AAE: train_step needs labels y")
        labels = y if self.supervised else None
        opt = self.optimizers
        opt["autoencoder"].zero_grad()
        rec = self.loss(x)
        self.backward(rec)
        opt["autoencoder"].step()

        opt["discriminator"].zero_grad()
        dis = self.discriminator_loss(x, labels=labels)
        self.backward_discriminator(dis)
        opt["discriminator"].step()

        opt["generator"].zero_grad()
        gen = self.generator_loss(x, labels=labels)
        self.backward_generator(gen)
        opt["generator"].step()
        return {"recon": rec.value, "disc": dis.value, "gen": gen.value, "loss": rec.value}

    def eval_terms(self, x, y=None, rng=None):
        """Test terms; the discriminator's prior samples come from ``rng`` (the evaluation's
        stream; default a fixed seed per call), never from the model's generator."""
        labels = y if self.supervised else None
        rng = rng if rng is not None else B.Generator(1234, device=x)
        z_prior = self.prior.sample(x.shape[0], rng, labels, B.dtype_name(x.dtype))

        def all_terms():
            terms = dict(self.loss(x).terms)
            terms["disc"] = self.discriminator_loss(x, z_prior=z_prior, labels=labels).value
            terms["gen"] = self.generator_loss(x, labels=labels).value
            return terms
        return self._eval(all_terms)

    # --- using a trained model ---------------------------------------------------------------
    def sample(self, n, rng, labels=None):
        """Decode n prior samples drawn from ``rng``."""
        return self.decode(self.prior.sample(n, rng, labels, self.dtype))
