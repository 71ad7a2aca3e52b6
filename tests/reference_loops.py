"""Independent fp64 reference of the paper's Eq. 4: an explicit loop over the Kh x Kw
window with index arithmetic written out (no unfold, nothing shared with the package)."""

from __future__ import annotations

import torch


def out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def involution_loops(x, w, stride, padding, dilation):
    """Y[b,c,i,j] = sum_{u,v} w[b, c // (C/G), u, v, i, j] * x[b, c, i*s-p+u*d, j*s-p+v*d]
    in float64. Differentiable (autograd gives the reference gradients)."""
    x = x.double()
    w = w.double()
    B, C, H, W = x.shape
    G, Kh, Kw = w.shape[1], w.shape[2], w.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho, Wo = out_size(H, Kh, sh, ph, dh), out_size(W, Kw, sw, pw, dw)
    group_of_channel = torch.arange(C) // (C // G)
    w_per_channel = w[:, group_of_channel]  # (B, C, Kh, Kw, Ho, Wo)
    out = torch.zeros(B, C, Ho, Wo, dtype=torch.float64)
    for u in range(Kh):
        rows = torch.arange(Ho) * sh - ph + u * dh
        row_ok = (rows >= 0) & (rows < H)
        for v in range(Kw):
            cols = torch.arange(Wo) * sw - pw + v * dw
            col_ok = (cols >= 0) & (cols < W)
            if H == 0 or W == 0:
                continue
            patch = x[:, :, rows.clamp(0, H - 1)][:, :, :, cols.clamp(0, W - 1)]
            mask = (row_ok[:, None] & col_ok[None, :]).double()
            out = out + w_per_channel[:, :, u, v] * patch * mask
    return out
