"""The training objective, exactly as ``tests/reference/golden_training.json`` describes it.

Flow matching with t = 1 at pure noise: x_t = t*x1 + (1-t)*x0, target v = x1 - x0, r = t, plain
mean MSE over every element (padded frames included, as upstream). Randomness comes from the
global torch RNG (CPU for timesteps and CFG, the device for noise), which checkpoints save and
restore: a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import torch


def logit_normal_timesteps(batch: int, mu: float, sigma: float, device) -> torch.Tensor:
    """Upstream ``sample_t_r`` in training: t = max of two sigmoid(N(mu, sigma)) draws; r = t."""
    t = torch.sigmoid(torch.randn(batch) * sigma + mu)
    r = torch.sigmoid(torch.randn(batch) * sigma + mu)
    return torch.maximum(t, r).to(device)


def shifted_schedule(steps: int, shift: float) -> torch.Tensor:
    """Inference timesteps: s = linspace(1, 0, n+1)[:-1]; t = shift*s / (1 + (shift-1)*s)."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return (shift * s / (1 + (shift - 1) * s)).float()


def discrete_timesteps(batch: int, schedule: torch.Tensor, device) -> torch.Tensor:
    """Vanilla mode: t drawn uniformly from the discrete schedule (8-step shift-3 for turbo)."""
    idx = torch.randint(0, schedule.shape[0], (batch,))
    return schedule[idx].to(device)


def cfg_dropout(encoder_hidden_states: torch.Tensor, null_emb: torch.Tensor,
                ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each sample's condition by the null embedding with probability ``ratio``."""
    b = encoder_hidden_states.shape[0]
    drop = torch.rand(b) < ratio
    if ratio <= 0 or not bool(drop.any()):
        return encoder_hidden_states, drop
    null = null_emb.to(encoder_hidden_states.dtype).expand_as(encoder_hidden_states)
    mask = drop.to(encoder_hidden_states.device)[:, None, None]
    return torch.where(mask, null, encoder_hidden_states), drop


def sample_generators(seed: int, epoch: int, positions: list[int]) -> list[torch.Generator]:
    """Data-parallel runs: one generator per song, keyed by (seed, epoch, position in the
    epoch's order), so a song's window, timestep, dropout and noise do not depend on which
    rank or batch it lands in; N ranks x batch B match one process x batch N*B."""
    return [torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + pos)
                                          % 2**63) for pos in positions]


def keyed_draws(generators: list[torch.Generator], shape, mode: str, schedule: torch.Tensor,
                mu: float, sigma: float, cfg_ratio: float):
    """(t [B], dropped [B], noise [B, *shape]) drawn on the CPU, one generator per sample."""
    ts, drops, noise = [], [], []
    for g in generators:
        if mode == "vanilla":
            ts.append(schedule[torch.randint(0, schedule.shape[0], (1,), generator=g)])
        else:
            a = torch.sigmoid(torch.randn(1, generator=g) * sigma + mu)
            b = torch.sigmoid(torch.randn(1, generator=g) * sigma + mu)
            ts.append(torch.maximum(a, b))
        drops.append(torch.rand(1, generator=g) < cfg_ratio)
        noise.append(torch.randn(tuple(shape), generator=g))
    return torch.cat(ts), torch.cat(drops), torch.stack(noise)


def min_snr_weights(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights for the velocity loss.

    With x_t = (1-t) x0 + t x1, SNR(t) = ((1-t)/t)^2 and the x0 error is t times the velocity
    error, so the min-SNR x0 weight min(SNR, gamma) becomes min(SNR, gamma) * t^2 on the
    velocity MSE, i.e. min((1-t)^2, gamma * t^2). Adam is scale-free, so only the relative
    weighting across timesteps matters.
    """
    t = t.double().clamp(1e-6, 1.0)
    snr = ((1 - t) / t) ** 2
    return (torch.minimum(snr, torch.full_like(snr, gamma)) * t * t).float()


def flow_inputs(x0: torch.Tensor, t: torch.Tensor,
                x1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity) for clean latents x0 [B, T, C], t [B] and noise x1 (drawn here
    from the global RNG unless given)."""
    x1 = torch.randn_like(x0) if x1 is None else x1
    tt = t.to(x0.dtype)[:, None, None]
    return tt * x1 + (1 - tt) * x0, x1 - x0


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.float() - target.float()) ** 2).mean(dim=(1, 2))


def predict(model, batch: dict, xt: torch.Tensor, t: torch.Tensor, ehs: torch.Tensor,
            device) -> torch.Tensor:
    """The decoder's velocity for ``xt`` at ``t`` (r = t) under the batch's condition ``ehs``."""
    return model(hidden_states=xt, timestep=t, timestep_r=t,
                 attention_mask=batch["attention_mask"].to(device, non_blocking=True),
                 encoder_hidden_states=ehs,
                 encoder_attention_mask=batch["encoder_attention_mask"].to(device),
                 context_latents=batch["context_latents"].to(device, non_blocking=True))[0]


def batch_loss(model, null_emb: torch.Tensor, batch: dict, *, mode: str, cfg_ratio: float,
               loss_weighting: str, snr_gamma: float, schedule: torch.Tensor, mu: float,
               sigma: float, device, generators: list[torch.Generator] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mse, weighted loss) of one batch: the training step's forward pass, also what the
    gradient-sensitivity estimate differentiates. ``model`` is the decoder (or what wraps it).
    ``generators`` (one per sample, see ``sample_generators``) replace the global RNG."""
    x0 = batch["target_latents"].to(device, non_blocking=True)
    ehs = batch["encoder_hidden_states"].to(device, non_blocking=True)
    if generators is not None:
        return _keyed_loss(model, null_emb, batch, x0, ehs, generators, mode=mode,
                           cfg_ratio=cfg_ratio, loss_weighting=loss_weighting,
                           snr_gamma=snr_gamma, schedule=schedule, mu=mu, sigma=sigma,
                           device=device)
    bsz = x0.shape[0]
    if mode == "vanilla":
        t = discrete_timesteps(bsz, schedule, device)
    else:
        t = logit_normal_timesteps(bsz, mu, sigma, device)
    if mode != "vanilla" and cfg_ratio > 0:
        ehs, _ = cfg_dropout(ehs, null_emb, cfg_ratio)
    xt, target = flow_inputs(x0, t)
    per_sample = per_sample_mse(predict(model, batch, xt, t, ehs, device), target)
    mse = per_sample.mean()
    if loss_weighting == "min_snr":
        return mse, (min_snr_weights(t, snr_gamma).to(device) * per_sample).mean()
    return mse, mse


def _keyed_loss(model, null_emb, batch, x0, ehs, generators, *, mode, cfg_ratio,
                loss_weighting, snr_gamma, schedule, mu, sigma, device):
    """``batch_loss`` with every draw from the per-sample generators."""
    ratio = cfg_ratio if mode != "vanilla" else 0.0
    t, drop, x1 = keyed_draws(generators, x0.shape[1:], mode, schedule, mu, sigma, ratio)
    t = t.to(device)
    if ratio > 0 and bool(drop.any()):
        null = null_emb.to(ehs.dtype).expand_as(ehs)
        ehs = torch.where(drop.to(ehs.device)[:, None, None], null, ehs)
    xt, target = flow_inputs(x0, t, x1.to(device=x0.device, dtype=x0.dtype))
    per_sample = per_sample_mse(predict(model, batch, xt, t, ehs, device), target)
    mse = per_sample.mean()
    if loss_weighting == "min_snr":
        return mse, (min_snr_weights(t, snr_gamma).to(device) * per_sample).mean()
    return mse, mse
