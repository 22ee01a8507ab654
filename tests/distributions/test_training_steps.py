"""The distributions in training: a REINFORCE policy-gradient step (as pytorch/examples'
reinforce.py) moves the policy towards the rewarded action; a VAE-style step gets its
gradients through rsample and kl_divergence."""

from __future__ import annotations

import itertools

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.distributions import Categorical, Normal, kl_divergence


class Policy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.affine = nn.Linear(4, 2)

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        return F.softmax(self.affine(x), dim=-1)


def test_reinforce_step_moves_the_policy_towards_the_rewarded_action(test_device):
    dt.manual_seed(0)
    policy = Policy().to(test_device)
    optimizer = dt.optim.SGD(policy.parameters(), lr=0.5)
    state = dt.tensor([[0.5, -0.2, 0.1, 0.3]], device=test_device)

    def prob_of_one() -> float:
        with dt.no_grad():
            return policy(state)[0, 1].item()

    history = [prob_of_one()]
    for _ in range(10):
        probs = policy(state)
        m = Categorical(probs)
        action = m.sample()
        reward = 1.0 if action.item() == 1 else 0.0
        baseline = 0.5  # the advantage is +-0.5: every step favours action 1
        loss = (-m.log_prob(action) * (reward - baseline)).sum()
        optimizer.zero_grad()
        loss.backward()
        # d(-A log p_a)/d(logits) = -A (onehot(a) - p), pushed back through the linear layer
        p = probs.detach().cpu().numpy()[0]
        onehot = np.eye(2)[action.item()]
        grad_logits = -(reward - baseline) * (onehot - p)
        np.testing.assert_allclose(
            policy.affine.bias.grad.cpu().numpy(), grad_logits, rtol=1e-5, atol=1e-6
        )
        optimizer.step()
        history.append(prob_of_one())
    assert all(b > a for a, b in itertools.pairwise(history)), history


def test_vae_step_gradients_through_rsample_and_kl(test_device):
    dt.manual_seed(0)
    encoder = nn.Linear(3, 4).to(test_device)
    decoder = nn.Linear(2, 3).to(test_device)
    x = dt.randn(5, 3).to(test_device)
    h = encoder(x)
    mu, logvar = h[:, :2], h[:, 2:]
    std = (0.5 * logvar).exp()
    q = Normal(mu, std)
    z = q.rsample()
    assert z.requires_grad and z.shape == (5, 2)
    recon = F.mse_loss(decoder(z), x, reduction="sum")
    kl = kl_divergence(q, Normal(dt.zeros_like(mu), dt.ones_like(std))).sum()
    # the usual closed form: -0.5 sum(1 + logvar - mu^2 - exp(logvar))
    expected = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
    np.testing.assert_allclose(kl.item(), expected.item(), rtol=1e-5)
    (recon + kl).backward()
    for p in (*encoder.parameters(), *decoder.parameters()):
        assert p.grad is not None and np.isfinite(p.grad.cpu().numpy()).all()
        assert np.abs(p.grad.cpu().numpy()).sum() > 0
