#!/usr/bin/env python3
"""Perplexity of the longmamba demonstration model against sequence length, vanilla and (with
--longmamba) with a LongMamba Δ-filter calibrated in Python, using Hugging Face transformers'
Mamba2ForCausalLM (torch path, float32, CPU).

    nice -n 19 /tmp/reference-venv/bin/python scripts/demo_eval.py \
        --model Fixtures/demo-model --text Fixtures/demo-corpus/eval.txt \
        [--longmamba --corpus Fixtures/demo-corpus/train-sample.jsonl.zst]

Vanilla → Fixtures/demo-model/vanilla-perplexity.json:
  for each length S in --lengths: perplexity of the first window [0, S) of the tokenized held-out
  text, and the mean over --windows non-overlapping windows [i·S, (i+1)·S) (mean of per-window
  mean losses, reported as exp); perplexity = exp(mean next-token cross-entropy over S-1 targets).
  Also "same_tokens_ppl": the first 32768 tokens cut into windows of S, so every length is scored
  on the same text (the cleanest length comparison; window-start effects included).
  Per-position loss of the longest length in buckets of the training length (target positions
  1..S-1; position p is the token predicted from tokens [0, p)), first window and window mean.

LongMamba (Python reference of docs/method.md §4) → Fixtures/demo-model/longmamba-python-perplexity.json:
  calibrate: K windows of exactly L = training_length tokens from the calibration corpus
  (documents with ≥ L tokens, seeded choice of document and offset); record Δ = softplus(dt +
  dt_bias) clamped to time_step_limit for every layer, head and token; per sample/layer/head
  clamp Δ at its k-th largest value (k = max(1, floor(L·p))), D = Σ clamped Δ, a = exp(A·D),
  τ(S) from the stretched sorted curve (interpolate linear, align_corners=False, running sum,
  first index exceeding D, k* = i+1, τ = stretched[min(k*, S-1)]); τ = 0 for S ≤ L; aggregate
  max over samples. At inference for S > L: heads with a > θ are global; in them Δ := 0 where
  Δ ≤ τ(S). Applied by wrapping transformers' mamba2_chunk_scan (prefill only).
"""
import argparse
import io
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

import transformers
from transformers import Mamba2ForCausalLM
from transformers.models.mamba2 import modeling_mamba2 as mm

transformers.logging.set_verbosity_error()

_ORIG_SCAN = mm.mamba2_chunk_scan


class DeltaHook:
    """Wraps mamba2_chunk_scan: computes Δ exactly as transformers does, optionally records it
    and/or applies a LongMamba mask, then calls the original scan with the final Δ."""

    def __init__(self, model):
        self.layer = None
        self.record = None  # list per layer of Δ tensors [B, T, H], or None
        self.mask = None  # {layer: (global_bool[H], tau[H])} or None
        self.kept = []  # (kept, total) counts in global heads
        for i, blk in enumerate(model.backbone.layers):
            blk.mixer.register_forward_pre_hook(self._pre(i))
        mm.mamba2_chunk_scan = self.scan

    def _pre(self, i):
        def f(module, args):
            self.layer = i

        return f

    def scan(self, hidden_states, dt, A, B, C, chunk_size, D=None, dt_bias=None, initial_states=None,
             dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False, **kw):
        if dt_bias is not None:
            dt = dt + dt_bias.to(dt.dtype)
        if dt_softplus:
            dt = F.softplus(dt)
        dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])
        if self.record is not None:
            self.record[self.layer].append(dt.detach().clone())
        if self.mask is not None and self.layer in self.mask:
            glob, tau = self.mask[self.layer]
            keep = dt > tau  # [B, T, H] strict
            keep = keep | ~glob  # local heads untouched
            self.kept.append(((keep & glob).sum().item(), (glob.expand_as(keep)).sum().item()))
            dt = torch.where(keep, dt, torch.zeros_like(dt))
        return _ORIG_SCAN(hidden_states, dt, A, B, C, chunk_size, D=D, dt_bias=None, initial_states=initial_states,
                          dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=return_final_states, **kw)


@torch.no_grad()
def token_losses(model, ids):
    x = ids[None]
    logits = model(input_ids=x).logits[0, :-1].float()
    return F.cross_entropy(logits, ids[1:], reduction="none")  # [S-1]


def evaluate(model, tokens, lengths, windows, L, bucket_len, hook=None, mask_for=None, same_tokens=32768):
    res = {"lengths": {}, "buckets": None}
    for S in lengths:
        nw = min(windows, len(tokens) // S)
        per_window = []
        kept_share = []
        longest = []
        for w in range(nw):
            ids = tokens[w * S:(w + 1) * S]
            if hook is not None:
                hook.mask = mask_for(S) if mask_for else None
                hook.kept = []
            t0 = time.time()
            losses = token_losses(model, ids)
            if hook is not None and hook.kept:
                k = sum(a for a, _ in hook.kept)
                n = sum(b for _, b in hook.kept)
                kept_share.append(k / n if n else None)
                hook.mask = None
            per_window.append(losses.mean().item())
            if S == max(lengths):
                longest.append(losses)
        # Same tokens at every length: the first same_tokens tokens cut into windows of S.
        same = []
        M = same_tokens
        per_batch = max(1, 8192 // S)
        starts = list(range(0, M - S + 1, S))
        for i in range(0, len(starts), per_batch):
            xs = torch.stack([tokens[s:s + S] for s in starts[i:i + per_batch]])
            if hook is not None:
                hook.mask = mask_for(S) if mask_for else None
            with torch.no_grad():
                logits = model(input_ids=xs).logits[:, :-1].float()
            if hook is not None:
                hook.mask = None
            same.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), xs[:, 1:].reshape(-1), reduction="none"))
        same = torch.cat(same)
        r = {
            "same_tokens_ppl": math.exp(same.mean().item()),
            "same_tokens": {"tokens": len(starts) * S, "windows": len(starts), "targets": same.numel()},
            "first_window_ppl": math.exp(per_window[0]),
            "mean_ppl": math.exp(float(np.mean(per_window))),
            "windows": nw,
            "per_window_ppl": [round(math.exp(v), 4) for v in per_window],
        }
        if kept_share and kept_share[0] is not None:
            r["kept_share_in_global_heads"] = float(np.mean(kept_share))
        res["lengths"][str(S)] = r
        print(f"  S={S:5d} first {r['first_window_ppl']:.3f}  mean({nw}) {r['mean_ppl']:.3f}  same-tokens {r['same_tokens_ppl']:.3f}"
              + (f"  kept {r['kept_share_in_global_heads']:.3f}" if "kept_share_in_global_heads" in r else ""),
              flush=True)
        if longest:
            S = max(lengths)
            buckets = []
            for b0 in range(0, S, bucket_len):
                # targets at positions b0+1 .. b0+bucket_len (losses index p-1 predicts position p)
                lo, hi = max(b0, 0), min(b0 + bucket_len, S - 1)
                first = longest[0][lo:hi].mean().item()
                mean = float(np.mean([l[lo:hi].mean().item() for l in longest]))
                buckets.append({"from": b0, "to": b0 + bucket_len, "first_window_loss": round(first, 5),
                                "mean_loss": round(mean, 5), "mean_ppl": round(math.exp(mean), 4)})
            res["buckets"] = {"length": S, "bucket": bucket_len, "windows": len(longest), "buckets": buckets}
    return res


def load_corpus_docs(path):
    import zstandard

    with open(path, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [json.loads(l)["text"] for l in raw.decode("utf-8").splitlines() if l.strip()]


def stretch_threshold(sorted_desc, D, S):
    """τ and α for target length S from one channel's clamped Δ sorted descending (length L)."""
    L = sorted_desc.numel()
    st = F.interpolate(sorted_desc.view(1, 1, L), size=S, mode="linear", align_corners=False).view(S)
    cs = torch.cumsum(st, 0)
    i = torch.argmax((cs > D).int()).item()  # 0 if never exceeded (authors' behaviour)
    k = i + 1
    tau = st[min(k, S - 1)].item()
    return tau, min(k / S, 1.0)


def calibrate(model, hook, tok, docs, L, K, p, lengths, seed):
    rng = random.Random(seed)
    enc = [tok.encode(d).ids for d in docs]
    cand = [i for i, e in enumerate(enc) if len(e) >= L]
    picks = []
    for _ in range(K):
        d = rng.choice(cand)
        off = rng.randrange(0, len(enc[d]) - L + 1)
        picks.append((d, off))
    nl = len(model.backbone.layers)
    A = [-torch.exp(b.mixer.A_log.float()).detach() for b in model.backbone.layers]
    per = []  # per sample: {layer: (D[H], a[H], tau{S: [H]})}
    for d, off in picks:
        ids = torch.tensor(enc[d][off:off + L])
        hook.record = [[] for _ in range(nl)]
        with torch.no_grad():
            model(input_ids=ids[None])
        rec = hook.record
        hook.record = None
        s = {}
        for l in range(nl):
            dt = rec[l][0][0]  # [L, H]
            H = dt.shape[1]
            k = max(1, int(math.floor(L * p)))
            cap = torch.topk(dt, k, dim=0).values[-1]  # k-th largest per head
            dtc = torch.minimum(dt, cap)
            Dl = dtc.sum(0)
            al = torch.exp(A[l] * Dl)
            taus = {}
            for S in lengths:
                if S <= L:
                    taus[S] = [0.0] * H
                else:
                    taus[S] = [stretch_threshold(torch.sort(dtc[:, h], descending=True).values, Dl[h].item(), S)[0]
                               for h in range(H)]
            s[l] = (Dl, al, taus)
        per.append(s)
    table = {}
    for l in range(nl):
        table[l] = {
            "D": torch.stack([s[l][0] for s in per]).max(0).values.tolist(),
            "a": torch.stack([s[l][1] for s in per]).max(0).values.tolist(),
            "tau": {S: np.max(np.array([s[l][2][S] for s in per]), 0).tolist() for S in lengths},
        }
    return picks, table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Fixtures/demo-model")
    ap.add_argument("--text", default="Fixtures/demo-corpus/eval.txt")
    ap.add_argument("--corpus", default="Fixtures/demo-corpus/train-sample.jsonl.zst")
    ap.add_argument("--lengths", default="256,512,1024,2048,4096,8192")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="vanilla JSON (default MODEL/vanilla-perplexity.json)")
    ap.add_argument("--longmamba", action="store_true")
    ap.add_argument("--lm-out", default=None, help="default MODEL/longmamba-python-perplexity.json")
    ap.add_argument("--thetas", default="0.05,0.1,0.3,0.9,0.95")
    ap.add_argument("--K", type=int, default=5)
    ap.add_argument("--p", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    model = Mamba2ForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    with open(os.path.join(args.model, "config.json")) as f:
        L = int(json.load(f)["training_length"])
    with open(args.text, encoding="utf-8") as f:
        tokens = torch.tensor(tok.encode(f.read()).ids)
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"eval tokens {len(tokens)}, training length {L}", flush=True)
    hook = DeltaHook(model)

    print("vanilla", flush=True)
    t0 = time.time()
    van = evaluate(model, tokens, lengths, args.windows, L, L)
    meta = {"model": args.model, "text": args.text, "eval_tokens": len(tokens), "training_length": L,
            "ppl": "exp(mean next-token cross-entropy over the window's S-1 targets)",
            "windows": "non-overlapping [i*S, (i+1)*S) from the start of the tokenized text",
            "implementation": f"transformers {transformers.__version__} Mamba2ForCausalLM torch path, float32",
            "seconds": round(time.time() - t0, 1)}
    out = args.out or os.path.join(args.model, "vanilla-perplexity.json")
    with open(out, "w") as f:
        json.dump({"meta": meta, **van}, f, indent=1)
        f.write("\n")

    if not args.longmamba:
        return
    docs = load_corpus_docs(args.corpus)
    picks, table = calibrate(model, hook, tok, docs, L, args.K, args.p, lengths, args.seed)
    results = {}
    for th in [float(x) for x in args.thetas.split(",")]:
        def mask_for(S, th=th):
            if S <= L:
                return None
            m = {}
            for l, t in table.items():
                glob = torch.tensor([a > th for a in t["a"]])
                m[l] = (glob, torch.tensor(t["tau"][S], dtype=torch.float32))
            return m

        n_glob = {l: int(sum(a > th for a in t["a"])) for l, t in table.items()}
        print(f"longmamba theta={th} global heads per layer {n_glob}", flush=True)
        r = evaluate(model, tokens, lengths, args.windows, L, L, hook=hook, mask_for=mask_for)
        r["global_heads_per_layer"] = n_glob
        results[str(th)] = r
    lm_out = args.lm_out or os.path.join(args.model, "longmamba-python-perplexity.json")
    with open(lm_out, "w") as f:
        json.dump({"meta": {**meta, "K": args.K, "p": args.p, "seed": args.seed, "aggregation": "max",
                            "calibration_windows": [{"doc": d, "token_offset": o} for d, o in picks],
                            "filter": "S > training_length; global heads a > theta; keep delta > tau(S)"},
                   "vanilla": van,
                   "table": {str(l): {"D": t["D"], "a": t["a"], "tau": {str(S): v for S, v in t["tau"].items()}}
                             for l, t in table.items()},
                   "longmamba": results}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
