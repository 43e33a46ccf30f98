#!/usr/bin/env python3
"""Golden file for the LongMamba filter methods: Δ as the authors' own code filters it.

The LongMamba authors (GATECH-EIC/LongMamba) filter a global channel's Δ over the whole prompt
with one of five functions of mamba_ssm/ops/selective_scan_interface.py, called from
mamba_ssm/modules/mamba2.py (dt "b h l", channel_mask = tA_prod > c, slow_factor 0, topk 2000,
merge_config['b'] = 1):

    dt_thre           get_channelwise_dt_threshold(dt[:, m], dt_thre=τ[m])   keep Δ > τ
    alpha             get_channelwise_topAlpha(dt[:, m], alpha=α[m])          keep rank < α·S
    bound             get_channelwise_topBound(dt[:, m], decay=D[m])          keep rank < #{cumsum ≤ D}
    norm              get_channelwise_normalize(dt[:, m], decay=D[m])         Δ · D / Σ Δ
    channelwise_topk  get_topk_mask_channelwise(dt[:, m], k=2000)            keep Δ > quantile(1 − k/S)

then dt[:, m] = torch.where(mask, dt[:, m], dt[:, m] * 0) (norm: dt[:, m] = the result).

This script reads those five functions' source out of the authors' file with `ast` and executes
only them (the module itself imports CUDA extensions), so nothing of theirs is copied into this
repository. It also holds our own reference of the semantics we adopt (docs: python/README.md,
"Methods"; Sources/LongMamba/Model/LongMambaMethods.swift) and prints where the two agree.

    /tmp/reference-venv/bin/python scripts/make_modes_golden.py /path/to/LongMamba   # checkout or bare git dir

Writes Fixtures/golden/longmamba-modes.safetensors. For each case `{name}` (see CASES):
    {name}.dt               f32 [1, H, L]  Δ ≥ 0 (after bias and softplus), Mamba-2 layout "b h l"
    {name}.{method}         f32 [1, H, L]  Δ after the authors' code, for each of the five methods
The parameters are shared by the cases of one length L (`L{L}.…`):
    L{L}.cumulative_decay   f32 [H]   a_c (global ⇔ a_c > θ)
    L{L}.theta              f32 [1]   θ
    L{L}.delta_threshold    f32 [H]   τ_c(S)   (the table row's, S = L)
    L{L}.kept_fraction      f32 [H]   α_c(S)
    L{L}.decay_budget       f32 [H]   D_c
Cases `L{L}-distinct`: no two Δ of a channel are equal, so every method is defined without a
tie rule; cases `L{L}-ties`: Δ on a coarse grid (many exact ties, zeros included). torch.sort is
not stable, so for alpha and bound the authors keep an arbitrary subset of the tokens tied at the
cut, we the earliest ones: the same number of tokens and the same kept values, maybe other
tokens. The metadata's `tie_cases` names those cases, `exact` the (case, method) pairs where our
reference equals the authors' output bit for bit (see `compare`).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Fixtures", "golden", "longmamba-modes.safetensors")
SOURCE = "mamba_ssm/ops/selective_scan_interface.py"
FUNCTIONS = ("get_channelwise_dt_threshold", "get_channelwise_topAlpha", "get_channelwise_topBound",
             "get_channelwise_normalize", "get_topk_mask_channelwise")
METHODS = ("dt_thre", "alpha", "bound", "norm", "channelwise_topk")
TOPK = 2000          # mamba2.py: self.topk
H = 8
LENGTHS = (3000, 2100, 1500)   # k = 2000 < L twice; L = 1500: k = L
THETA = 0.5
f32 = np.float32


# ---- the authors' code -------------------------------------------------------------------------

def read_source(path: str):
    """(the text of selective_scan_interface.py, where it came from) from a checkout or a bare git dir."""
    file = os.path.join(path, SOURCE)
    if os.path.isfile(file):
        with open(file, encoding="utf-8") as f:
            return f.read(), f"{os.path.abspath(file)}"
    try:
        commit = subprocess.run(["git", "--git-dir", path, "rev-parse", "HEAD"], check=True, capture_output=True,
                                text=True).stdout.strip()
        text = subprocess.run(["git", "--git-dir", path, "show", f"HEAD:{SOURCE}"], check=True, capture_output=True,
                              text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"{path}: neither a checkout with {SOURCE} nor a git dir that has it ({e})")
    return text, f"GATECH-EIC/LongMamba@{commit}:{SOURCE}"


def load_functions(text: str):
    """The five functions, compiled from their own source only (with torch and numpy as np);
    and the SHA-256 of each one's source text."""
    tree = ast.parse(text)
    found = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in FUNCTIONS}
    missing = [n for n in FUNCTIONS if n not in found]
    if missing:
        sys.exit(f"{SOURCE} has no {', '.join(missing)}")
    nodes = [found[n] for n in FUNCTIONS]
    namespace = {"torch": torch, "np": np, "__name__": "longmamba_authors"}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), f"<authors' {SOURCE}>", "exec"), namespace)
    hashes = {n: hashlib.sha256(ast.get_source_segment(text, found[n]).encode()).hexdigest() for n in FUNCTIONS}
    return {n: namespace[n] for n in FUNCTIONS}, hashes


def authors(fn, method, dt, channel_mask, tau, alpha, decay):
    """Δ [1, H, L] after mamba2.py's branch for `method` (slow_factor 0, b = 1, topk 2000)."""
    dt = dt.clone()
    slow_factor, b = 0, 1
    if not bool(channel_mask.sum() != 0):
        return dt
    if method == "channelwise_topk":
        mask = fn["get_topk_mask_channelwise"](delta_t=dt[:, channel_mask], k=TOPK)
        dt[:, channel_mask] = torch.where(mask, dt[:, channel_mask], dt[:, channel_mask] * slow_factor)
    elif method == "alpha":
        mask = fn["get_channelwise_topAlpha"](delta_t=dt[:, channel_mask], alpha=alpha[channel_mask] * b)
        dt[:, channel_mask] = torch.where(mask, dt[:, channel_mask], dt[:, channel_mask] * slow_factor)
    elif method == "bound":
        mask = fn["get_channelwise_topBound"](delta_t=dt[:, channel_mask], decay=decay[channel_mask] * b)
        dt[:, channel_mask] = torch.where(mask, dt[:, channel_mask], dt[:, channel_mask] * slow_factor)
    elif method == "norm":
        dt[:, channel_mask] = fn["get_channelwise_normalize"](delta_t=dt[:, channel_mask], decay=decay[channel_mask] * b)
    elif method == "dt_thre":
        mask = fn["get_channelwise_dt_threshold"](delta_t=dt[:, channel_mask], dt_thre=tau[channel_mask] * b)
        dt[:, channel_mask] = torch.where(mask, dt[:, channel_mask], dt[:, channel_mask] * slow_factor)
    else:
        raise ValueError(method)
    return dt


# ---- our semantics (numpy, one channel at a time) ---------------------------------------------

def ranking(x):
    """Token indices by Δ descending, ties by index (earlier first)."""
    return np.lexsort((np.arange(x.size), -x.astype(np.float64)))


def topk_threshold(x, k_max=TOPK):
    """torch.quantile(x, 1 − k/S) (linear) as torch computes it in float32: q and its rank in f32,
    lerp as ATen's (fused multiply-add; the upper form from weight 0.5)."""
    S = x.size
    k = min(S, k_max)
    q = f32(1 - k / S)
    rank = f32(q * f32(S - 1))
    lo, hi = int(np.floor(rank)), int(np.ceil(rank))
    w = f32(rank - f32(lo))
    s = np.sort(x)
    a, b = s[lo], s[hi]
    d = f32(b - a)
    # fma(w, d, a) / fma(w − 1, d, b): the f32 × f32 product is exact in f64, one rounding after the add
    # (then a second one to f32: may differ from a true fma once in ~2^29; never in these cases).
    if abs(w) < 0.5:
        return f32(np.float64(w) * np.float64(d) + np.float64(a))
    return f32(np.float64(f32(w - f32(1))) * np.float64(d) + np.float64(b))


def ours(method, x, tau, alpha, budget, accumulate="f64"):
    """One global channel's Δ [S] after `method`, as we define it. accumulate: how the sums of
    bound and norm are formed: "f64" (in double, each result rounded to f32) or "f32" (a running
    float32 sum)."""
    x = x.astype(np.float32)
    S = x.size
    out = x.copy()
    if method == "dt_thre":
        out[~(x > tau)] = 0
    elif method == "alpha":
        k = min(f32(alpha * f32(S)), f32(S))
        n = min(S, int(np.ceil(k))) if k > 0 else 0
        out[ranking(x)[n:]] = 0
    elif method == "bound":
        order = ranking(x)
        if accumulate == "f64":
            sums = np.cumsum(x[order].astype(np.float64)).astype(np.float32)
        else:
            sums = np.cumsum(x[order], dtype=np.float32)   # numpy: a running f32 sum
        m = int(np.count_nonzero(sums <= budget))
        out[order[m:]] = 0
    elif method == "norm":
        total = f32(x.astype(np.float64).sum()) if accumulate == "f64" else np.add.accumulate(x, dtype=np.float32)[-1]
        out = (x * f32(budget / total)).astype(np.float32)
    elif method == "channelwise_topk":
        out[~(x > topk_threshold(x))] = 0
    else:
        raise ValueError(method)
    return out


def reference(method, dt, channel_mask, tau, alpha, decay, accumulate="f64"):
    """Our semantics over [B, H, L]: each global channel of each batch row on its own."""
    out = dt.numpy().copy()
    for b in range(out.shape[0]):
        for c in np.nonzero(channel_mask.numpy())[0]:
            out[b, c] = ours(method, out[b, c], f32(tau[c]), f32(alpha[c]), f32(decay[c]), accumulate)
    return torch.from_numpy(out)


# ---- the cases ---------------------------------------------------------------------------------

def softplus(x):
    return np.logaddexp(0, x).astype(np.float32)


def distinct(rng, L):
    """Δ ≥ 0 with no two equal in a channel: [1, H, L]."""
    x = softplus(rng.normal(-1.0, 1.6, (H, L)).astype(np.float32))
    for c in range(H):
        while np.unique(x[c]).size != L:
            _, first = np.unique(x[c], return_index=True)
            dup = np.setdiff1d(np.arange(L), first)
            x[c, dup] = np.nextafter(x[c, dup], np.float32(np.inf))
    return x[None]


def tied(rng, L):
    """Δ ≥ 0 on the grid k/16 (many exact ties; zeros included): [1, H, L]."""
    x = softplus(rng.normal(-1.0, 1.6, (H, L)).astype(np.float32))
    return (np.round(x * 16) / 16).astype(np.float32)[None]


def parameters(rng, L, dt):
    """a, τ, α, D for the H channels, chosen to reach the edges of every rule."""
    x = dt[0].astype(np.float64)
    a = np.array([0.9, 0.2, 0.75, 0.55, THETA, 0.97, 0.6, 0.81], dtype=np.float32)  # channel 1 local; 4: a = θ, local
    tau = np.array([np.quantile(x[c], q) for c, q in enumerate([0.5, 0.3, 0.9, 0.0, 0.5, 0.7, 0.2, 0.99])],
                   dtype=np.float32)
    tau[3] = 0                       # keeps every Δ > 0 (the zeros of the tie cases go)
    tau[7] = f32(x[7].max() * 2)     # keeps nothing
    alpha = np.array([1.0, 0.3, 0.5, 1e-4, 0.25, float(rng.uniform(0.05, 0.95)), 0.6667, 0.123456],
                     dtype=np.float32)   # 1: k = S; 0.5: k = S/2 exact; 1e-4: k < 1, one token
    total = x.sum(axis=1)
    decay = np.array([total[0] * 0.3, total[1] * 0.5, total[2] * 2.0, x[3].max() * 0.5, total[4] * 0.4,
                      total[5] * 0.05, total[6] * 0.77, total[7] * 0.999], dtype=np.float32)  # 2: all; 3: none
    return a, tau, alpha, decay


def build_cases(rng):
    cases, params = [], {}
    for L in LENGTHS:
        base = distinct(rng, L)
        params[L] = parameters(rng, L, base)
        cases.append((f"L{L}-distinct", L, base, False))
        cases.append((f"L{L}-ties", L, tied(rng, L), True))
    return cases, params


def same_up_to_ties(ref, got, dt):
    """Per channel and row: equal sorted outputs (the same number of tokens kept, the same values)."""
    return bool(torch.equal(torch.sort(ref, dim=-1).values, torch.sort(got, dim=-1).values))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("authors", help="the LongMamba repository: a checkout or a (bare) git dir")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    text, where = read_source(args.authors)
    fn, hashes = load_functions(text)
    rng = np.random.default_rng(20250406)
    cases, params = build_cases(rng)
    tensors, exact, report = {}, [], []
    for L, (a, tau, alpha, decay) in params.items():
        tensors[f"L{L}.cumulative_decay"] = torch.from_numpy(a)
        tensors[f"L{L}.theta"] = torch.tensor([THETA], dtype=torch.float32)
        tensors[f"L{L}.delta_threshold"] = torch.from_numpy(tau)
        tensors[f"L{L}.kept_fraction"] = torch.from_numpy(alpha)
        tensors[f"L{L}.decay_budget"] = torch.from_numpy(decay)
    for name, L, dt_np, ties in cases:
        a, tau, alpha, decay = (torch.from_numpy(v) for v in params[L])
        channel_mask = a > THETA            # as mamba2.py: tA_prod > c (float32 against the float)
        dt = torch.from_numpy(dt_np)
        tensors[f"{name}.dt"] = dt
        for method in METHODS:
            got = authors(fn, method, dt, channel_mask, tau, alpha, decay)
            assert got.dtype == torch.float32 and got.shape == dt.shape
            tensors[f"{name}.{method}"] = got.contiguous()
            variants = {"f64": reference(method, dt, channel_mask, tau, alpha, decay, "f64")}
            if method in ("bound", "norm"):
                variants["f32"] = reference(method, dt, channel_mask, tau, alpha, decay, "f32")
            cells = []
            for acc, ref in variants.items():
                equal = torch.equal(ref, got)
                if equal and acc == "f64":
                    exact.append(f"{name}.{method}")
                if equal:
                    cells.append(f"{acc}: exact")
                elif method == "norm":
                    err = ((ref - got).abs() / got.abs().clamp_min(1e-30)).max().item()
                    cells.append(f"{acc}: max rel diff {err:.2e}")
                elif ties and same_up_to_ties(ref, got, dt):
                    cells.append(f"{acc}: same count and values, other tied tokens "
                                 f"({int((ref != got).sum())} elements differ)")
                else:
                    cells.append(f"{acc}: DIFFERENT ({int((ref != got).sum())} elements)")
            kept = [int(((got[0, c] != 0) if method != "norm" else torch.ones(L, dtype=torch.bool)).sum())
                    if channel_mask[c] else -1 for c in range(H)]
            report.append(f"{name:16} {method:17} {'; '.join(cells)}   kept per channel {kept}")
    metadata = {
        "generator": "scripts/make_modes_golden.py",
        "source": where,
        "function_sha256": json.dumps(hashes, sort_keys=True),
        "torch": torch.__version__,
        "methods": ",".join(METHODS),
        "cases": ",".join(c[0] for c in cases),
        "tie_cases": ",".join(c[0] for c in cases if c[3]),
        "exact": ",".join(exact),
        "layout": "dt [1, H, L] (b h l); global channel: cumulative_decay > theta (float32)",
    }
    from safetensors.torch import save_file
    save_file(tensors, args.out, metadata=metadata)
    print("\n".join(report))
    print(f"wrote {os.path.relpath(args.out, ROOT)} ({os.path.getsize(args.out)} bytes) from {where}")


if __name__ == "__main__":
    main()
