#!/usr/bin/env python3
"""The GPU checks of the Python package (run by scripts/gpu-check.sh).

Where CUDA exists:
1. Parity on the GPU: on the demo model (Fixtures/demo-model) with its stored table (tables/
   demo-model.sqlite from `make run`, else a synthetic table), passkey and perplexity in float32 on
   the GPU against the same on the CPU: every accuracy equal, every perplexity to 1e-4 relative.
   bfloat16 on the GPU is reported beside them (its own evaluation; not expected to be equal).
2. Speed: passkey at 16k tokens on a mamba-130m-shaped and a mamba2-1.3b-shaped random
   checkpoint (transformers' own initialisation), vanilla and with a table: prompts/s and peak GPU
   memory. The table is synthetic (random τ, a third of the channels global): the filter's cost
   does not depend on its values.

3. Scale calibration (delta_scale, a_power) on the GPU: a job prepared by the CLI on a copy of the
   demo store (`longmamba calibrate-scales --prepare-only`, 4 samples of 1024 tokens, 2 SPSA
   steps) run by Python on the CPU and on the GPU in float32: every step's losses to 1e-5
   relative and log-scales to 1e-3, with the wall time per step on each.

Without CUDA it says so and exits 0. `--device cpu --length 512` runs the same steps on the CPU
at a small size, to check the script itself.
"""
import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

import numpy as np  # noqa: E402

SHAPES = {
    # name: (transformers config class, its arguments)
    "mamba-130m": ("MambaConfig", dict(hidden_size=768, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4,
                                       vocab_size=50280, time_step_rank=48)),
    "mamba2-1.3b": ("Mamba2Config", dict(hidden_size=2048, num_hidden_layers=48, state_size=128, expand=2, head_dim=64,
                                         num_heads=64, n_groups=1, conv_kernel=4, vocab_size=50288)),
}


def synthetic_table(model, training_length, longest, seed=0):
    """A table of the model's mixers' shape: a row every training length up to `longest`."""
    import longmamba_tables as lmt
    from longmamba_tables.apply import _mixers, _model_channels
    rng = np.random.default_rng(seed)
    lengths = np.arange(training_length, longest + 1, training_length, dtype=np.int64)
    layers = []
    for i, (_, mixer, (_, kind)) in enumerate(_mixers(model)):
        C = _model_channels(mixer, kind)
        layers.append(lmt.LayerTable(
            layer=i,
            delta_threshold=rng.uniform(0.001, 0.05, (len(lengths), C)).astype(np.float32),
            kept_fraction=np.full((len(lengths), C), 0.5, np.float32),
            decay_budget=np.ones(C, np.float32),
            cumulative_decay=rng.uniform(0, 0.15, C).astype(np.float32),
            A=-np.ones(C, np.float32)))   # θ = 0.1: about a third global
    return lmt.Table(lengths=lengths, layers=layers, metadata={"training_length": str(training_length)},
                     source="synthetic")


def parity(device, lengths):
    import torch
    import transformers
    import longmamba_tables as lmt
    model_dir = os.path.join(ROOT, "Fixtures", "demo-model")
    store_path = os.path.join(ROOT, "tables", "demo-model.sqlite")
    cpu = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if os.path.exists(store_path):
        table, name = lmt.open(store_path).table(2), f"{store_path} table 2"
    else:
        table, name = synthetic_table(cpu, 128, 4096), "a synthetic table (run `make run` for the stored one)"
    tokenizer = os.path.join(model_dir, "tokenizer.json")
    text = os.path.join(ROOT, "Fixtures", "demo-corpus", "eval.txt")
    print(f"parity on the demo model with {name}, θ = 0.01, lengths {lengths}")
    common = dict(table=table, theta=0.01, lengths=lengths, force=True)
    ok = True
    results = {}
    for where, dtype in dict.fromkeys([("cpu", "float32"), (device, "float32"), (device, "bfloat16")]):
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        pk = lmt.passkey(model, tokenizer, depths=[0, 0.5, 1], trials=4, seed=7, device=where, dtype=dtype, **common)
        ppl = lmt.perplexity(model, tokenizer, text=text, windows=2, device=where, dtype=dtype, **common)
        results[(where, dtype)] = (pk, ppl)
        del model
    base_pk, base_ppl = results[("cpu", "float32")]
    for (where, dtype), (pk, ppl) in results.items():
        if (where, dtype) == ("cpu", "float32"):
            continue
        same = [(a.vanilla_accuracy, a.longmamba_accuracy) == (b.vanilla_accuracy, b.longmamba_accuracy)
                for a, b in zip(pk.points, base_pk.points)]
        rel = max(max(abs(a.vanilla_perplexity - b.vanilla_perplexity) / b.vanilla_perplexity,
                      abs(a.longmamba_perplexity - b.longmamba_perplexity) / b.longmamba_perplexity)
                  for a, b in zip(ppl.points, base_ppl.points))
        verdict = ""
        if dtype == "float32":
            good = all(same) and rel <= 1e-4
            ok &= good
            verdict = "  OK" if good else "  FAILED (float32 must equal the CPU: accuracies equal, perplexity ≤ 1e-4)"
        print(f"  {where} {dtype}: passkey cells equal to CPU float32: {sum(same)}/{len(same)}; "
              f"perplexity max relative difference {rel:.2e}{verdict}")
    return ok


def speed(device, length, trials, shapes):
    import torch
    import transformers
    import longmamba_tables as lmt
    tokenizer = os.path.join(ROOT, "Fixtures", "demo-model", "tokenizer.json")
    print(f"\npasskey at {length} tokens, depth 0.5, {trials} trials per batch, random checkpoints "
          f"(transformers' initialisation), table: synthetic, θ = 0.1")
    print("| shape | dtype | method | prompts/s | peak memory |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        cls, args = SHAPES[shape]
        config = getattr(transformers, cls)(**args)
        torch.manual_seed(0)
        for dtype in ["float32", "bfloat16"]:
            model = transformers.AutoModelForCausalLM.from_config(config).to(device=device, dtype=getattr(torch, dtype)).eval()
            table = synthetic_table(model, 2048, max(length, 4096))
            # Untimed first: the first forwards of a process (allocator, kernel selection) are several times slower.
            lmt.passkey(model, tokenizer, table=table, theta=0.1, lengths=[min(length, 1024)], depths=[0.5], trials=1,
                        device=device, dtype=dtype, force=True)
            for method, t in [("vanilla", None), ("LongMamba", table)]:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                try:
                    r = lmt.passkey(model, tokenizer, table=t, theta=0.1, lengths=[length], depths=[0.5], trials=trials,
                                    include_vanilla=t is None, device=device, dtype=dtype, force=True)
                    rate = f"{r.prompts_per_second:.3f}"
                except lmt.LongMambaTableError as e:
                    rate = f"refused: {e}"
                peak = (f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.startswith("cuda") else "-")
                print(f"| {shape} | {dtype} | {method} | {rate} | {peak} |", flush=True)
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()


def scale_calibration(device):
    """The same prepared SPSA job run by Python on the CPU and on `device` (float32)."""
    import shutil
    import sqlite3
    import subprocess
    import tempfile
    import longmamba_tables as lmt
    from longmamba_tables.scales import calibrate_scales
    store = os.path.join(ROOT, "tables", "demo-model.sqlite")
    cli = os.path.join(ROOT, ".build", "release", "longmamba")
    if not (os.path.exists(store) and os.path.exists(cli)):
        print("\nscale calibration: skipped (needs `make run`'s tables/demo-model.sqlite and the built CLI)")
        return True
    model_dir = os.path.join(ROOT, "Fixtures", "demo-model")
    corpus = os.path.join(ROOT, "Fixtures", "demo-corpus", "train-sample.jsonl.zst")
    ok = True
    print("\nscale calibration on the demo model: 4 samples of 1024 tokens, 2 SPSA steps, float32")
    print("| method | where | s per step | max relative loss difference | max log-scale difference |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in ["delta_scale", "a_power"]:
            runs = {}
            for where in dict.fromkeys(["cpu", device]):
                db = os.path.join(tmp, f"{method}-{where.replace(':', '_')}.sqlite")
                src = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
                dst = sqlite3.connect(db)
                src.backup(dst)
                dst.close(); src.close()
                out = subprocess.run([cli, "calibrate-scales", "--db", db, "--run", "1", "--model", model_dir, "--corpus", corpus,
                                      "--method", method, "--lengths", "1024", "--samples", "4", "--steps", "2", "--seed", "11",
                                      "--prepare-only", "--quiet"], capture_output=True, text=True, check=True).stdout
                job = int(out.split()[-1])
                started = time.time()
                result = calibrate_scales(db, job, model_dir, device=where, dtype="float32")
                seconds = (time.time() - started) / max(1, result.steps_run)
                con = sqlite3.connect(db)
                rows = con.execute("SELECT step, loss_plus, loss_minus, log_scales_f32 FROM scale_steps WHERE job_id = ? ORDER BY step",
                                   (job,)).fetchall()
                con.close()
                runs[where] = (seconds, rows)
            base = runs["cpu"][1]
            for where, (seconds, rows) in runs.items():
                losses = max((abs(a - b) / abs(b) for r, q in zip(rows, base) for a, b in [(r[1], q[1]), (r[2], q[2])]
                              if a is not None and b is not None), default=0.0)
                scales = max(float(np.max(np.abs(np.frombuffer(r[3], "<f4") - np.frombuffer(q[3], "<f4")))) for r, q in zip(rows, base))
                good = where == "cpu" or (losses <= 1e-5 and scales <= 1e-3)
                ok &= good
                print(f"| {method} | {where} | {seconds:.2f} | {losses:.1e} | {scales:.1e} |{'' if good else ' FAILED'}", flush=True)
    return ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default=None, help="default: cuda where available")
    p.add_argument("--length", type=int, default=16384)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--parity-lengths", default="512,1024")
    p.add_argument("--shapes", default="mamba-130m,mamba2-1.3b")
    a = p.parse_args()
    import torch
    device = a.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() is False): "
              f"nothing to check on a GPU. The CPU figures are in README.md; `scripts/gpu-check.sh --device cpu "
              f"--length 512` runs these steps on the CPU at a small size.")
        return 0
    if device.startswith("cuda"):
        print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    ok = parity(device, [int(s) for s in a.parity_lengths.split(",")])
    speed(device, a.length, a.trials, a.shapes.split(","))
    ok &= scale_calibration(device)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
