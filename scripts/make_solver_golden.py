"""Writes Fixtures/solver/*.safetensors: small synthetic recordings (in `longmamba record`'s format)
and the reference solver's results on them. Run with the reference venv:
    /tmp/reference-venv/bin/python scripts/make_solver_golden.py
"""
import json, os, sys
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from solver_reference import solve_sample, aggregate

OUT = os.path.join(os.path.dirname(__file__), "..", "Fixtures", "solver")
LENGTHS = [50, 100, 101, 102, 150, 233, 400, 1000, 4097, 20000, 100000]


def synthetic_delta(g, L, C):
    # softplus of a normal, as Δ = softplus(dt + bias); a few channels with ties / all-equal / zeros.
    d = torch.nn.functional.softplus(torch.randn(L, C, generator=g) * 1.5 - 3.0)
    d[:, 0] = torch.round(d[:, 0] * 20) / 20       # many ties
    d[:, 1] = 0.125                                 # all equal
    d[: L // 2, 2] = 0.0                            # half zeros
    d[:, 3] = d[:, 3] * torch.exp(torch.randn(L, generator=g) * 2)  # heavy tail
    return d.float().contiguous()


def make(name, arch, L, C, N, layers, K, seed, ps):
    g = torch.Generator().manual_seed(seed)
    A = [(-torch.exp(torch.randn(C, N, generator=g))) if arch == "mamba" else (-torch.exp(torch.randn(C, generator=g)))
         for _ in range(layers)]
    deltas = [[synthetic_delta(g, L, C) for _ in range(layers)] for _ in range(K)]
    for s in range(K):
        t = {}
        for i in range(layers):
            t[f"layer.{i}.delta"] = deltas[s][i]
            t[f"layer.{i}.A"] = A[i].float().contiguous()
        save_file(t, os.path.join(OUT, f"{name}-sample{s}.safetensors"),
                  metadata={"architecture": arch, "fingerprint": f"golden-{name}", "tool_version": "golden"})
    expected = {"lengths": torch.tensor(LENGTHS, dtype=torch.int64)}
    for p in ps:
        tag = f"p{int(round(p * 100)):02d}"
        for i in range(layers):
            per = [solve_sample(deltas[s][i], A[i].float(), p, LENGTHS) for s in range(K)]
            for s, r in enumerate(per):
                for key, v in r.items():
                    expected[f"{tag}.sample{s}.layer.{i}.{key}"] = v.float().contiguous()
            for how in ("max", "mean"):
                agg = aggregate(per, how)
                for key, v in agg.items():
                    expected[f"{tag}.{how}.layer.{i}.{key}"] = v.float().contiguous()
    meta = {"architecture": arch, "samples": str(K), "layers": str(layers), "clamp_fractions": json.dumps(ps),
            "torch": torch.__version__, "generator": "scripts/make_solver_golden.py"}
    save_file(expected, os.path.join(OUT, f"{name}-expected.safetensors"), metadata=meta)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make("mamba2", "mamba2", L=100, C=8, N=1, layers=2, K=3, seed=1, ps=[0.05, 0.2])
    make("mamba1", "mamba", L=97, C=6, N=4, layers=2, K=2, seed=2, ps=[0.2, 0.5])
    print("wrote", sorted(os.listdir(OUT)))
