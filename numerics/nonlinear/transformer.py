"""Small softmax transformers in PyTorch with TransformerLens names and shapes.

Per layer: W_Q, W_K, W_V (n_heads, d_model, d_head), W_O (n_heads, d_head, d_model); optional
MLP W_in (d_model, d_mlp), W_out (d_mlp, d_model) with ReLU; embeddings W_E (d_vocab, d_model),
W_pos (n_ctx, d_model), unembedding W_U (d_model, d_vocab); no LayerNorm. Attention is causal.
The per-head matrices the measures track are QK = W_Q W_Kᵀ and OV = W_V W_O (d_model × d_model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class TransformerConfig:
    d_vocab: int
    n_ctx: int
    d_model: int = 48
    n_heads: int = 4
    d_head: int = 12
    n_layers: int = 2
    d_mlp: int = 0            # 0: attention-only
    init_std: float = 0.02


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        shape_in = (cfg.n_heads, cfg.d_model, cfg.d_head)
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.randn(shape_in) * cfg.init_std)
                                        for _ in range(3))
        self.W_O = nn.Parameter(torch.randn(cfg.n_heads, cfg.d_head, cfg.d_model) * cfg.init_std)
        mask = torch.triu(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask)
        self.scale = 1.0 / math.sqrt(cfg.d_head)

    def forward(self, x):                                   # x: (batch, pos, d_model)
        q = torch.einsum("bpd,hde->bhpe", x, self.W_Q)
        k = torch.einsum("bpd,hde->bhpe", x, self.W_K)
        v = torch.einsum("bpd,hde->bhpe", x, self.W_V)
        scores = torch.einsum("bhpe,bhqe->bhpq", q, k) * self.scale
        n = x.shape[1]
        scores = scores.masked_fill(self.mask[:n, :n], float("-inf"))
        pattern = scores.softmax(dim=-1)
        z = torch.einsum("bhpq,bhqe->bhpe", pattern, v)
        return torch.einsum("bhpe,hed->bpd", z, self.W_O)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = None
        if cfg.d_mlp:
            self.W_in = nn.Parameter(torch.randn(cfg.d_model, cfg.d_mlp) * cfg.init_std)
            self.W_out = nn.Parameter(torch.randn(cfg.d_mlp, cfg.d_model) * cfg.init_std)
            self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
            self.mlp = True

    def forward(self, x):
        x = x + self.attn(x)
        if self.mlp:
            x = x + torch.relu(x @ self.W_in + self.b_in) @ self.W_out
        return x


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_model) * cfg.init_std)
        self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * cfg.init_std)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.W_U = nn.Parameter(torch.randn(cfg.d_model, cfg.d_vocab) * cfg.init_std)

    def forward(self, tokens):                              # (batch, pos) -> logits
        x = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return x @ self.W_U

    def tracked(self) -> dict:
        """Float64 copies of the matrices the measures follow: per layer and head QK and OV,
        plus W_E and W_U (and W_in, W_out when there is an MLP)."""
        out = {"W_E": self.W_E, "W_U": self.W_U}
        for l, block in enumerate(self.blocks):
            a = block.attn
            for h in range(self.cfg.n_heads):
                out[f"L{l}H{h}_QK"] = a.W_Q[h] @ a.W_K[h].T
                out[f"L{l}H{h}_OV"] = a.W_V[h] @ a.W_O[h]
            if block.mlp:
                out[f"L{l}_W_in"], out[f"L{l}_W_out"] = block.W_in, block.W_out
        return {k: v.detach().double().cpu().numpy() for k, v in out.items()}

    def weight_norm(self) -> float:
        return float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in self.parameters())))


def top_hessian_eigenvalue(model: nn.Module, loss_fn, iters: int = 20, seed: int = 0) -> float:
    """Top Hessian eigenvalue of ``loss_fn(model)`` by Lanczos on autograd Hessian-vector
    products (double-backward), through ``numerics.measures``."""
    from ..measures.matrices import top_hessian_eigenvalue as lanczos
    params = [p for p in model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    loss = loss_fn(model)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])

    def hvp(v):
        vt = torch.as_tensor(v, dtype=flat.dtype)
        hv = torch.autograd.grad(flat @ vt, params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).double().numpy()

    return lanczos(hvp, int(np.sum(sizes)), tol=1e-4, maxiter=iters * 10, seed=seed)
