"""DM: distribution matching (Zhao & Bilen, 2023).

Each iteration draws a fresh random frozen ConvNet and matches, per class, the mean embedding of
Siamese-augmented real images with that of the synthetic images. All classes go through one
forward pass; per-class means come from one scatter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distillkit.methods.base import Method, MethodContext, class_means


class DistributionMatching(Method):
    name = "dm"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.optimiser = torch.optim.SGD(
            self.synthetic.parameters(),
            lr=float(self.cfg["lr_img"]),
            momentum=float(self.cfg["momentum"]),
        )
        # Classes with fewer images than batch_real use all of them (no duplicated rows).
        self.batch_real = min(int(self.cfg["batch_real"]), int(self.data.class_counts().min()))

    def matching_loss(self, net: torch.nn.Module) -> Tensor:
        """sum_c || mean embed(A(R_c)) - mean embed(A(S_c)) ||^2 for one network and DSA draw."""
        k = self.synthetic.num_classes
        real, real_labels = self.real_view(
            *self.data.sample_per_class(self.batch_real, self.generator)
        )
        syn, syn_labels = self.synthetic.batch()
        real, syn = self.siamese_augment(real, real_labels, syn, syn_labels, k)
        with torch.no_grad():
            real_means = class_means(net.embed(real), real_labels, k)
        syn_means = class_means(net.embed(syn), syn_labels, k)
        return (real_means - syn_means).pow(2).sum()

    def step(self, iteration: int) -> dict[str, Tensor]:
        net = self.ctx.networks.frozen(self.generator)
        net.train()
        loss = self.matching_loss(net)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return {"loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"optimiser": self.optimiser.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimiser.load_state_dict(state["optimiser"])
