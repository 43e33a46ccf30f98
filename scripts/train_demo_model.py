#!/usr/bin/env python3
"""Train the longmamba demonstration model: a small Mamba-2 (transformers Mamba2ForCausalLM)
on the public-domain King James Bible from Debian's `bible-kjv-text` plus passkey-retrieval
examples, at a training length of 128 tokens, on CPU. See Fixtures/demo-model/README.md.

Reproduce (Debian bookworm, 2-core CPU, /tmp/reference-venv from scripts/reference-venv.sh):

    apt-get install -y bible-kjv-text          # provides /usr/bin/bible and /usr/lib/bible.data
    nice -n 19 /tmp/reference-venv/bin/python scripts/train_demo_model.py
    # defaults = the committed model: --arch mamba2 --seq 128 --batch 16 --steps 3000 --warmup 100
    # --vocab 2048 --hidden 128 --layers 4 --head-dim 32 --state 64 --chunk 64 --lr 3e-3
    # --dt-min 1e-4 --dt-max 1e-2 --passkey-fraction 0.5 --prose-haystack 0.3 --answer-weight 5
    # --seed 1234   (1547 s of training on a 2-core machine shared with Swift builds)

Steps (all seeded):
  1. dump the whole KJV text with `bible -l0 gen1:1-rev22:21` and split it into books;
  2. hold out whole books for evaluation (HELD_OUT below), the rest is training text;
     documents = books, each book = its chapters ("Genesis 1\\n\\n1 In the beginning ...");
  3. train a byte-level BPE tokenizer (GPT-NeoX style) on the training books (plus 300
     passkey prompts, so the template sentences are whole-word tokens);
  4. join the tokenized training books with <|endoftext|> (id 0) and train on random windows of
     --seq tokens; --passkey-fraction of the windows start with a passkey prompt in the exact
     format of `longmamba eval --task passkey` (instruction, filler or digit-free KJV haystack,
     the needle at a random depth, the question, the answer weighted --answer-weight in the
     loss), of a random length that fits the window (AdamW, linear warm-up + cosine decay);
  5. save config.json (+ "training_length") and model.safetensors, tokenizer.json;
     write the calibration corpus (Pile-style .jsonl.zst of training chapters) and eval.txt.
     training-log.json has teacher-forced passkey accuracy at 1, 2, 4, 8 (and 16) × L.

--arch mamba trains a Mamba-1 (MambaForCausalLM) instead; transformers' CPU path for it runs a
Python loop over tokens (0.07 steps/s here, against 3.7 for Mamba-2), too slow for this budget.
"""
import argparse
import io
import json
import math
import os
import random
import re
import subprocess
import time

import numpy as np
import torch

HELD_OUT = ["Judges", "Ruth", "Ecclesiastes", "Luke", "Romans"]
TRAINING_LENGTH = 128


def load_kjv_books():
    raw = subprocess.run(["bible", "-l0", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    books = {}  # book -> list of chapter texts, in order
    order = []
    cur_book, cur_lines, cur_head = None, None, None

    def flush():
        if cur_book is not None and cur_lines:
            books[cur_book].append(cur_head + "\n\n" + "\n".join(cur_lines) + "\n")

    for line in raw.split("\n"):
        m = re.match(r"^(\S.*) (\d+)$", line)
        if m:
            flush()
            cur_book, cur_head, cur_lines = m.group(1), line, []
            if cur_book not in books:
                books[cur_book] = []
                order.append(cur_book)
            continue
        s = line.strip()
        if s and cur_lines is not None:
            cur_lines.append(s)
    flush()
    return order, books


def book_text(chapters):
    return "\n".join(chapters)  # chapters end with "\n": blank line between chapters


# The passkey prompt of `longmamba eval --task passkey` (Sources/LongMamba/Evaluation/Passkey.swift).
PK_INSTRUCTION = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information there."
PK_FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PK_QUESTION = " What is the pass key? The pass key is"


def pk_needle(key):
    return f" The pass key is {key}. Remember it. {key} is the pass key."


def train_tokenizer(texts, vocab_size, out_path):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    tok.save(out_path)
    # decoders.ByteLevel() ignores its arguments and saves add_prefix_space=true; GPT-NeoX's
    # tokenizer.json says false (the flag has no effect on decoding). Write it as GPT-NeoX does.
    with open(out_path, encoding="utf-8") as f:
        j = json.load(f)
    j["decoder"]["add_prefix_space"] = False
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
    return Tokenizer.from_file(out_path)


class PasskeyExamples:
    """Training examples in the format of `eval --task passkey`: instruction, haystack with the
    needle at a random depth, question, then the answer " NNNNN." (weighted in the loss). The
    haystack is the eval filler or, for a share of examples, KJV text with its digits removed
    (so the key is the only number, as in the eval). Each example starts a window at position 0,
    as an eval prompt does; the rest of the window continues with <|endoftext|> and KJV text."""

    def __init__(self, tok, train_texts, rng):
        self.tok, self.rng = tok, rng
        self.instr = tok.encode(PK_INSTRUCTION).ids
        self.question = tok.encode(PK_QUESTION).ids
        self.filler = tok.encode(PK_FILLER).ids
        plain = re.sub(r"[0-9]+ ?", "", "\n".join(train_texts[:20]))
        self.prose = tok.encode(plain).ids

    def key(self):
        return str(self.rng.randint(10_000, 99_999))

    def haystack(self, n, prose):
        if prose:
            s = self.rng.randint(0, len(self.prose) - n - 1)
            return self.prose[s : s + n]
        out = []
        while len(out) < n:
            out.extend(self.filler)
        return out[:n]

    def make(self, length, depth=None, prose=False, key=None):
        """(tokens, answer_start, answer_len) of a prompt+answer of exactly `length` tokens."""
        key = key or self.key()
        needle = self.tok.encode(pk_needle(key)).ids
        answer = self.tok.encode(" " + key + ".").ids
        H = length - len(self.instr) - len(needle) - len(self.question) - len(answer)
        assert H >= 0, (length, H)
        hay = self.haystack(H, prose)
        d = self.rng.random() if depth is None else depth
        i = int(round(d * H / len(self.filler))) * len(self.filler) if not prose else int(d * H)
        i = min(H, i)
        toks = self.instr + hay[:i] + needle + hay[i:] + self.question + answer
        return toks, len(toks) - len(answer), len(answer) - 1  # the final "." is not scored as answer

    def fixed(self):
        return len(self.instr) + len(self.tok.encode(pk_needle("12345")).ids) + len(self.question) + 6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="Fixtures/demo-model")
    ap.add_argument("--corpus-out", default="Fixtures/demo-corpus")
    ap.add_argument("--arch", default="mamba2", choices=["mamba", "mamba2"])
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--state", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--seq", type=int, default=TRAINING_LENGTH)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--dt-min", type=float, default=0.0001)
    ap.add_argument("--dt-max", type=float, default=0.01)
    ap.add_argument("--passkey-fraction", type=float, default=0.5, help="share of training windows that are passkey examples")
    ap.add_argument("--prose-haystack", type=float, default=0.3, help="share of passkey examples with a KJV haystack")
    ap.add_argument("--answer-weight", type=float, default=5.0, help="loss weight of the passkey answer tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-budget", type=float, default=0, help="stop early after this many seconds (0: none)")
    ap.add_argument("--bench", action="store_true", help="only time a few steps")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    order, books = load_kjv_books()
    assert len(order) == 66, order
    train_books = [b for b in order if b not in HELD_OUT]
    eval_books = [b for b in order if b in HELD_OUT]
    train_texts = [book_text(books[b]) for b in train_books]
    eval_text = "\n".join(book_text(books[b]) for b in eval_books)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.corpus_out, exist_ok=True)

    tok_path = os.path.join(args.out, "tokenizer.json")
    # With passkey training the tokenizer also sees the template sentences (a few hundred
    # prompts), so the instruction is a few dozen tokens, not 60 byte pieces.
    tok_texts = list(train_texts)
    if args.passkey_fraction > 0:
        r = random.Random(args.seed + 1)
        for _ in range(300):
            k = str(r.randint(10_000, 99_999))
            tok_texts.append(PK_INSTRUCTION + PK_FILLER * 3 + pk_needle(k) + PK_FILLER + PK_QUESTION + " " + k + ".")
    tok = train_tokenizer(tok_texts, args.vocab, tok_path)
    ids = []
    for t in train_texts:
        ids.extend(tok.encode(t).ids)
        ids.append(0)  # <|endoftext|> between documents, as in pre-training
    data = torch.tensor(ids, dtype=torch.long)
    eval_ids = torch.tensor(tok.encode(eval_text).ids, dtype=torch.long)
    print(f"train tokens {len(data)}, eval tokens {len(eval_ids)}, chars/token {sum(map(len, train_texts)) / len(data):.2f}", flush=True)
    pk = PasskeyExamples(tok, train_texts, random.Random(args.seed + 2))
    if args.passkey_fraction > 0:
        print(f"passkey prompt: {pk.fixed()} fixed tokens (instruction {len(pk.instr)}, question {len(pk.question)}, filler unit {len(pk.filler)})", flush=True)

    if not args.bench:
        # Eval text and Pile-style calibration corpus (training chapters, >= 1500 characters each).
        with open(os.path.join(args.corpus_out, "eval.txt"), "w", encoding="utf-8") as f:
            f.write(eval_text)
        import zstandard

        rng = random.Random(args.seed)
        chapters = [(b, c) for b in train_books for c in books[b] if len(c) >= 1500]
        rng.shuffle(chapters)
        buf = io.StringIO()
        total = 0
        for b, c in chapters:
            if total > 300_000:
                break
            buf.write(json.dumps({"text": c, "meta": {"pile_set_name": "KJV"}}, ensure_ascii=False) + "\n")
            total += len(c)
        cctx = zstandard.ZstdCompressor(level=19)
        with open(os.path.join(args.corpus_out, "train-sample.jsonl.zst"), "wb") as f:
            f.write(cctx.compress(buf.getvalue().encode("utf-8")))

    vocab_padded = ((tok.get_vocab_size() + 15) // 16) * 16
    d_inner = 2 * args.hidden
    common = dict(vocab_size=vocab_padded, hidden_size=args.hidden, num_hidden_layers=args.layers, state_size=args.state,
                  expand=2, conv_kernel=4, tie_word_embeddings=True, use_bias=False, use_conv_bias=True,
                  time_step_min=args.dt_min, time_step_max=args.dt_max, bos_token_id=0, eos_token_id=0, pad_token_id=1,
                  residual_in_fp32=True)
    if args.arch == "mamba2":
        from transformers import Mamba2Config, Mamba2ForCausalLM

        cfg = Mamba2Config(head_dim=args.head_dim, num_heads=d_inner // args.head_dim, n_groups=1, chunk_size=args.chunk, **common)
        model = Mamba2ForCausalLM(cfg)
    else:
        from transformers import MambaConfig, MambaForCausalLM

        cfg = MambaConfig(time_step_rank=max(1, args.hidden // 16), **common)
        model = MambaForCausalLM(cfg)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{args.arch}: params {nparams} ({nparams * 4 / 1e6:.2f} MB f32)", flush=True)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if (p.ndim < 2 or "A_log" in n or "dt_bias" in n or n.endswith(".D") or "norm" in n) else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))

    g = torch.Generator().manual_seed(args.seed)
    n_windows = len(data) - args.seq - 1
    brng = random.Random(args.seed + 3)

    def batch():
        """(tokens [B, L+1], loss weights [B, L]) — next-token targets are tokens[:, 1:]."""
        L = args.seq
        starts = torch.randint(0, n_windows, (args.batch,), generator=g).tolist()
        xs, ws = [], []
        for s in starts:
            x = data[s : s + L + 1].clone()
            w = torch.ones(L)
            if brng.random() < args.passkey_fraction:
                n = brng.randint(pk.fixed() + 8, L + 1)
                toks, a0, alen = pk.make(n, prose=brng.random() < args.prose_haystack)
                x[:n] = torch.tensor(toks)
                if n < L + 1:
                    x[n] = 0  # <|endoftext|>, then the KJV window continues
                w[a0 - 1 : a0 - 1 + alen] = args.answer_weight  # targets at positions a0-1.. predict the answer
            xs.append(x)
            ws.append(w)
        return torch.stack(xs), torch.stack(ws)

    def weighted_loss(x, w):
        logits = model(input_ids=x[:, :-1]).logits.float()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        return (ce * w.reshape(-1)).sum() / w.sum(), ce.mean()

    @torch.no_grad()
    def eval_loss(n=16):
        model.eval()
        L = args.seq
        xs = torch.stack([eval_ids[i * L : (i + 1) * L] for i in range(n)])
        out = model(input_ids=xs, labels=xs)
        model.train()
        return out.loss.item()

    @torch.no_grad()
    def passkey_accuracy(length, n=16):
        """Teacher-forced greedy check: every answer digit token is the argmax (= greedy decoding
        of the answer), filler haystack, depths evenly spread."""
        model.eval()
        r = random.Random(99)
        hits = 0
        for t in range(n):
            toks, a0, alen = pk.make(length, depth=t / max(1, n - 1), key=str(r.randint(10_000, 99_999)))
            x = torch.tensor([toks])
            pred = model(input_ids=x[:, :-1]).logits[0].argmax(-1)
            hits += int(torch.equal(pred[a0 - 1 : a0 - 1 + alen], x[0, a0 : a0 + alen]))
        model.train()
        return hits / n

    model.train()
    t0 = time.time()
    log = []
    steps_done = 0
    for step in range(args.steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step)
        x, w = batch()
        loss, lm_loss = weighted_loss(x, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_done = step + 1
        el = time.time() - t0
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} (unweighted {lm_loss.item():.4f}) lr {lr_at(step):.2e} {el:.0f}s {steps_done / el:.2f} step/s", flush=True)
        if step % 200 == 0 or step == args.steps - 1:
            ev = eval_loss()
            entry = {"step": step, "train_loss": lm_loss.item(), "eval_loss_train_length": ev, "elapsed_s": round(el, 1)}
            if args.passkey_fraction > 0:
                entry["passkey"] = {str(m): passkey_accuracy(m * args.seq) for m in (1, 2, 4, 8)}
            log.append(entry)
            print(f"  eval loss (16 x L held-out) {ev:.4f}" + (f"; passkey by ×L {entry['passkey']}" if "passkey" in entry else ""), flush=True)
        if args.bench and step >= 9:
            print(f"bench: {steps_done / el:.3f} step/s, {steps_done * args.batch * args.seq / el:.0f} tok/s")
            return
        if args.time_budget and el > args.time_budget:
            print(f"time budget reached at step {step}", flush=True)
            break
    wall = time.time() - t0
    ev = eval_loss()
    final_pk = {str(m): passkey_accuracy(m * args.seq, n=32) for m in (1, 2, 4, 8, 16)} if args.passkey_fraction > 0 else None
    print(f"done: {steps_done} steps in {wall:.0f}s; final eval loss {ev:.4f}; passkey {final_pk}", flush=True)

    dtype = args.dtype
    if dtype == "auto":
        dtype = "float32" if nparams * 4 <= 4.2e6 else "bfloat16"
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(args.out, safe_serialization=True)
    gc = os.path.join(args.out, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    cpath = os.path.join(args.out, "config.json")
    with open(cpath) as f:
        c = json.load(f)
    c["training_length"] = args.seq
    with open(cpath, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(args.out, "training-log.json"), "w") as f:
        json.dump({"args": vars(args), "params": nparams, "steps": steps_done, "wall_seconds": round(wall, 1),
                   "train_tokens": len(data), "eval_tokens": len(eval_ids), "final_eval_loss_train_length": ev,
                   "final_passkey_teacher_forced": final_pk, "torch": torch.__version__, "log": log}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
