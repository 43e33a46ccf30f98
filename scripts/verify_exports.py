"""Loads the three export formats of one table in Python and checks their values.

    /tmp/reference-venv/bin/python scripts/verify_exports.py \
        --safetensors t.safetensors --json t.json --artifacts art_dir [--recordings s0.safetensors s1.safetensors ...]

Checks: the safetensors tensors have the documented names, dtypes and shapes; the JSON and the
PyTorch artifacts (torch.load(weights_only=True)) hold exactly the same values; with --recordings,
the table equals the torch reference solver (scripts/solver_reference.py) run on the same Δ with the
table's own parameters (exact recordings: bit for bit).
"""
import argparse, json, os, sys
import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(__file__))
from solver_reference import solve_sample, aggregate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--safetensors", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--recordings", nargs="*", default=[])
    args = ap.parse_args()

    with safe_open(args.safetensors, framework="pt") as f:
        meta = f.metadata()
        st = {k: f.get_tensor(k) for k in f.keys()}
    table_meta = json.loads(meta["longmamba_table"])
    assert table_meta["method"] == "longmamba", table_meta
    layers = int(meta["layer_count"])
    lengths = st["lengths"]
    assert lengths.dtype == torch.int64 and lengths.dim() == 1
    T = lengths.numel()
    for i in range(layers):
        thr, kept = st[f"layer.{i}.threshold"], st[f"layer.{i}.kept_fraction"]
        C = thr.shape[1]
        assert thr.dtype == torch.float32 and thr.shape == (T, C), thr.shape
        assert kept.dtype == torch.float32 and kept.shape == (T, C)
        assert st[f"layer.{i}.decay_budget"].shape == (C,)
        assert st[f"layer.{i}.cumulative_decay"].shape == (C,)
        assert st[f"layer.{i}.A"].shape[0] == C
    expected_names = {"lengths"} | {f"layer.{i}.{n}" for i in range(layers)
                                     for n in ("threshold", "kept_fraction", "decay_budget", "cumulative_decay", "A")}
    assert set(st) == expected_names, set(st) ^ expected_names
    print(f"safetensors: {layers} layers, {T} lengths, names/dtypes/shapes ok")

    with open(args.json) as fh:
        js = json.load(fh)
    assert js["metadata"]["content_hash"] == meta["content_hash"]
    assert js["lengths"] == lengths.tolist()
    for i, layer in enumerate(js["layers"]):
        for key, name in (("threshold", "threshold"), ("kept_fraction", "kept_fraction"), ("decay_budget", "decay_budget"),
                          ("cumulative_decay", "cumulative_decay")):
            assert torch.equal(torch.tensor(layer[key], dtype=torch.float32), st[f"layer.{i}.{name}"]), (i, key)
        assert torch.equal(torch.tensor(layer["A"], dtype=torch.float32).reshape(layer["A_shape"]), st[f"layer.{i}.A"])
    print("json: identical values")

    art = args.artifacts
    for i in range(layers):
        load = lambda sub: torch.load(os.path.join(art, sub, f"{sub}_layer_{i}.pt"), weights_only=True)
        assert torch.equal(load("tA_prod"), st[f"layer.{i}.cumulative_decay"])
        assert torch.equal(load("decay"), st[f"layer.{i}.decay_budget"])
        assert torch.equal(load("A"), st[f"layer.{i}.A"])
        alpha, thre = load("alpha"), load("delta_t-thre")
        keys = [f"{int(n) // 1000}k" for n in lengths.tolist()]
        assert list(alpha.keys()) == keys and list(thre.keys()) == keys
        for t, k in enumerate(keys):
            assert torch.equal(alpha[k], st[f"layer.{i}.kept_fraction"][t]), (i, k)
            assert torch.equal(thre[k], st[f"layer.{i}.threshold"][t]), (i, k)
    print("longmamba-artifacts: torch.load(weights_only=True) ok, identical values")

    if args.recordings:
        p = float(meta["clamp_fraction"]); how = meta["aggregation"]; L_train = int(meta["training_length"])
        recs = [safe_open(r, framework="pt") for r in args.recordings]
        worst = 0.0
        for i in range(layers):
            per = [solve_sample(r.get_tensor(f"layer.{i}.delta"), r.get_tensor(f"layer.{i}.A"), p, lengths.tolist(), L_train) for r in recs]
            ref = aggregate(per, how)
            exact = how == "max"
            for key, name in (("tau", "threshold"), ("alpha", "kept_fraction"), ("D", "decay_budget"), ("a", "cumulative_decay")):
                ours = st[f"layer.{i}.{name}"]
                if exact and key in ("tau", "alpha", "D"):
                    assert torch.equal(ours, ref[key]), (i, key, (ours - ref[key]).abs().max())
                else:  # mean: torch adds v/K in float32, we average in double; a: exp(A·D) vs exp(cumsum(Δ·A))
                    rel = ((ours - ref[key]).abs() / ref[key].abs().clamp_min(1e-30)).max().item()
                    worst = max(worst, rel)
                    assert rel < 2e-5, (i, key, rel)
        print(f"reference solver on the recordings: {'bit-identical τ, α, D' if how == 'max' else 'within float32 rounding'}"
              f" (largest relative difference elsewhere {worst:.2e})")
    print("OK")


if __name__ == "__main__":
    main()
