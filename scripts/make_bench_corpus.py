#!/usr/bin/env python3
"""Makes a large synthetic Pile-like .jsonl.zst for `longmamba bench-corpus` (keep it out of git).

Documents are Zipf-distributed pseudo-words (plus some accented and CJK words, digits and
punctuation) in paragraphs, with log-normal lengths (median ~3 KB, a long tail to ~1 MB), one
JSON object per line with a random `pile_set_name`, written like lm_dataformat writes The Pile
(json.dumps with ASCII escapes; one zstd stream at level 3, no content size).

  /tmp/reference-venv/bin/python scripts/make_bench_corpus.py --size-mb 1024 --out /tmp/bench-1g.jsonl.zst

With --hf-tokenizer FILE it instead times Hugging Face `tokenizers` on the first --text-mb MB
of document text of --out (one thread: RAYON_NUM_THREADS=1, one `encode` call per document,
the same texts `longmamba bench-corpus` tokenizes). With --from-docs it writes a smaller corpus
of real English text (Debian changelogs and copyright files) for the tokenizer benchmark; with
--fuzz, random-Unicode documents whose ids checksum must equal HF's (compare the two outputs).
"""
import os
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import argparse
import json

import numpy as np
import zstandard

SUBSETS = ["Pile-CC", "PubMed Central", "Books3", "OpenWebText2", "ArXiv", "Github", "FreeLaw",
           "StackExchange", "USPTO Backgrounds", "PubMed Abstracts", "Gutenberg (PG-19)",
           "OpenSubtitles", "Wikipedia (en)", "DM Mathematics", "Ubuntu IRC", "BookCorpus2",
           "EuroParl", "HackerNews", "YoutubeSubtitles", "PhilPapers", "NIH ExPorter", "Enron Emails"]


def make_vocabulary(rng, n=40000):
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    freq = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2,
                     2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07])
    freq = freq / freq.sum()
    words = []
    for i in range(n):
        length = max(1, int(rng.gamma(2.0, 2.5)))
        w = "".join(rng.choice(letters, size=length, p=freq))
        r = rng.random()
        if r < 0.05:
            w = w.capitalize()
        elif r < 0.07:
            w = w + rng.choice(["é", "ü", "ø", "ñ"])
        elif r < 0.075:
            w = "".join(rng.choice(list("日本語中文字的是了在"), size=3))
        elif r < 0.09:
            w = str(rng.integers(0, 100000))
        elif r < 0.14:
            w = w + rng.choice([",", ".", ";", ":", "?", "!", ")"])
        words.append(w)
    weights = 1.0 / np.arange(1, n + 1) ** 1.05
    return np.array(words, dtype=object), weights / weights.sum()


def bench_hf(path, tokenizer_path, text_mb):
    import io
    import time
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_path)
    texts, total = [], 0
    with open(path, "rb") as f:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True), encoding="utf-8")
        for line in reader:
            t = json.loads(line)["text"]
            texts.append(t)
            total += len(t.encode("utf-8"))
            if total >= text_mb << 20:
                break
    t0 = time.perf_counter()
    encoded = [tok.encode(t).ids for t in texts]
    s = time.perf_counter() - t0
    n, h = 0, 0
    for ids in encoded:
        n += len(ids)
        for i in ids:
            h = (h * 1000003 + i + 1) % (1 << 64)
    print(f"HF tokenizers {__import__('tokenizers').__version__}: {total / 2**20:.1f} MB of text, {n} tokens, "
          f"{s:.2f} s, {total / 2**20 / s:.2f} MB/s (one thread), ids checksum {h}")


def from_docs(out):
    """A bench corpus of real English text: Debian's changelogs and copyright files."""
    import glob
    import gzip
    lines = []
    for path in sorted(glob.glob("/usr/share/doc/*/changelog*") + glob.glob("/usr/share/doc/*/copyright")):
        try:
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines.append(json.dumps({"text": text, "meta": {"pile_set_name": "Pile-CC"}}))
    blob = ("\n".join(lines) + "\n").encode("ascii")
    with open(out, "wb") as f:
        f.write(zstandard.ZstdCompressor(level=3).compress(blob))
    print(f"{len(lines)} documents, {len(blob) / 2**20:.0f} MB uncompressed -> {out}")


def fuzz(out, seed):
    """Documents of random code points drawn from many scripts and categories (letters, marks,
    digits, spaces, controls, emoji, Hangul jamo, unassigned), to compare token ids with HF."""
    rng = np.random.default_rng(seed)
    ranges = [(0x20, 0x7F), (0x09, 0x0E), (0xA0, 0x250), (0x300, 0x370), (0x370, 0x530), (0x590, 0x700),
              (0x900, 0xE00), (0x1100, 0x1200), (0x1E00, 0x2000), (0x2000, 0x2070), (0x20A0, 0x2400),
              (0x3000, 0x3100), (0x4E00, 0x4F00), (0xAC00, 0xAD00), (0xFE00, 0xFF00), (0x1F300, 0x1FA00),
              (0x10000, 0x10100), (0xE0000, 0xE0080), (0x1D400, 0x1D800), (0x0, 0x20)]
    ascii_words = ["the", "of", " and", "  ", "   ", "\n", "\n\n", "'s", "'ll", " 've", "123", "<|endoftext|>", "\t"]
    lines = []
    for _ in range(4000):
        parts = []
        for _ in range(int(rng.integers(1, 60))):
            if rng.random() < 0.4:
                parts.append(ascii_words[int(rng.integers(0, len(ascii_words)))])
            else:
                lo, hi = ranges[int(rng.integers(0, len(ranges)))]
                cps = rng.integers(lo, hi, size=int(rng.integers(1, 8)))
                parts.append("".join(chr(int(c)) for c in cps if not 0xD800 <= c <= 0xDFFF))
        lines.append(json.dumps({"text": "".join(parts), "meta": {"pile_set_name": "fuzz"}}))
    with open(out, "wb") as f:
        f.write(zstandard.ZstdCompressor(level=3).compress(("\n".join(lines) + "\n").encode("ascii")))
    print(f"{len(lines)} fuzz documents -> {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024, help="uncompressed size to write")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hf-tokenizer", help="time HF tokenizers on --out instead of writing it")
    ap.add_argument("--text-mb", type=int, default=32)
    ap.add_argument("--from-docs", action="store_true", help="real text from /usr/share/doc instead of synthetic")
    ap.add_argument("--fuzz", action="store_true", help="random Unicode documents for an ids comparison with HF")
    args = ap.parse_args()
    if args.fuzz:
        return fuzz(args.out, args.seed)
    if args.from_docs:
        return from_docs(args.out)
    if args.hf_tokenizer:
        return bench_hf(args.out, args.hf_tokenizer, args.text_mb)
    rng = np.random.default_rng(args.seed)
    vocab, p = make_vocabulary(rng)
    target = args.size_mb << 20
    written = 0
    docs = 0
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=False, threads=2)
    with open(args.out, "wb") as f, cctx.stream_writer(f) as w:
        while written < target:
            # A batch of documents from one block of words.
            lengths = np.minimum(np.exp(rng.normal(np.log(500), 1.2, size=256)).astype(int) + 5, 200000)
            ids = rng.choice(len(vocab), size=int(lengths.sum()), p=p)
            words = vocab[ids]
            lines = []
            start = 0
            for n in lengths:
                doc = words[start:start + n]
                start += n
                # Paragraph breaks every ~80 words.
                cuts = list(range(80, len(doc), 80))
                paras = [" ".join(doc[a:b]) for a, b in zip([0] + cuts, cuts + [len(doc)])]
                text = "\n\n".join(paras)
                lines.append(json.dumps({"text": text, "meta": {"pile_set_name": SUBSETS[rng.integers(0, len(SUBSETS))]}}))
            blob = ("\n".join(lines) + "\n").encode("ascii")
            w.write(blob)
            written += len(blob)
            docs += len(lines)
    print(f"{docs} documents, {written / 2**20:.0f} MB uncompressed -> {args.out}")


if __name__ == "__main__":
    main()
