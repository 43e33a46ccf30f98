#!/usr/bin/env python3
"""Builds the small Pile-format fixture corpus and its golden token checksums.

Output:
  Fixtures/corpus/fixture.jsonl.zst   Pile lines {"text": ..., "meta": {"pile_set_name": ...}},
                                      written as two concatenated zstd frames.
  Fixtures/corpus/fixture-golden.json per line: subset, byte offset, UTF-8 length, and for each
                                      tokenizer the token count and a checksum of the ids
                                      (h = h * 1000003 + id + 1 mod 2^64, from h = 0).

Sources (all redistributable; see Fixtures/corpus/README.md): the license texts in
/usr/share/common-licenses, and code/arithmetic/multilingual documents generated below from a
fixed seed. Run with the reference venv:
  /tmp/reference-venv/bin/python scripts/make_fixture_corpus.py
"""
import hashlib
import json
import os
import random
import re

import zstandard
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Fixtures", "corpus")
SHARED = os.environ.get("LONGMAMBA_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
LICENSES = "/usr/share/common-licenses"

WHOLE = {"FreeLaw": ["GPL-3", "Apache-2.0", "MPL-2.0"], "Pile-CC": ["GFDL-1.3"]}
CHUNKED = {"FreeLaw": ["GPL-2", "LGPL-2.1", "LGPL-3"], "Pile-CC": ["CC0-1.0", "Artistic", "BSD"]}

SENTENCES = [
    "The river runs past the old mill and into the valley.",
    "Der Fluss fließt an der alten Mühle vorbei ins Tal.",
    "La rivière passe devant le vieux moulin et descend dans la vallée.",
    "El río pasa junto al viejo molino y entra en el valle.",
    "Река течёт мимо старой мельницы в долину.",
    "川は古い水車小屋の横を流れて谷へ入る。",
    "河流经过旧磨坊，流入山谷。",
    "النهر يمر بجانب الطاحونة القديمة إلى الوادي.",
    "Ο ποταμός περνά δίπλα από τον παλιό μύλο.",
    "Joki virtaa vanhan myllyn ohi laaksoon. 🌊🏞️",
]


def paragraphs_to_docs(text, rng):
    """Groups a license's paragraphs into documents of 1-6 paragraphs."""
    paras = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
    docs, i = [], 0
    while i < len(paras):
        n = rng.randint(1, 6)
        docs.append("\n\n".join(paras[i:i + n]))
        i += n
    return docs


def code_doc(rng):
    names = ["scan", "merge", "decay", "budget", "clamp", "stretch", "record", "sample", "encode"]
    lines = []
    for _ in range(rng.randint(2, 8)):
        f = rng.choice(names) + "_" + str(rng.randint(0, 99))
        args = ", ".join(rng.sample(["x", "y", "delta", "a_log", "n", "seed"], rng.randint(1, 3)))
        lines.append(f"def {f}({args}):")
        lines.append(f"    \"\"\"Compute {rng.choice(names)} over {args}.\"\"\"")
        for _ in range(rng.randint(1, 5)):
            lines.append(f"    {rng.choice(['x', 'y', 'acc'])} = {rng.choice(['x', 'y', 'acc'])} {rng.choice(['+', '*', '-'])} {rng.randint(0, 1000)}")
        lines.append(f"    return acc if acc > {rng.randint(0, 9)} else -1\n")
    return "\n".join(lines)


def math_doc(rng):
    out = []
    for _ in range(rng.randint(3, 12)):
        a, b = rng.randint(-999, 9999), rng.randint(1, 999)
        op = rng.choice(["+", "-", "*"])
        out.append(f"What is {a} {op} {b}?\n{eval(f'{a} {op} {b}')}")
    return "\n\n".join(out)


def multilingual_doc(rng):
    return " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 15)))


def build_documents():
    rng = random.Random(20250415)
    docs = []
    for subset, names in WHOLE.items():
        for name in names:
            with open(os.path.join(LICENSES, name), encoding="utf-8") as f:
                docs.append((subset, f.read()))
    for subset, names in CHUNKED.items():
        for name in names:
            with open(os.path.join(LICENSES, name), encoding="utf-8") as f:
                docs.extend((subset, d) for d in paragraphs_to_docs(f.read(), rng))
    docs.extend(("Github", code_doc(rng)) for _ in range(40))
    docs.extend(("DM Mathematics", math_doc(rng)) for _ in range(40))
    docs.extend(("Wikipedia (en)", multilingual_doc(rng)) for _ in range(30))
    rng.shuffle(docs)
    return docs


def checksum(ids):
    h = 0
    for i in ids:
        h = (h * 1000003 + i + 1) % (1 << 64)
    return str(h)


M64 = (1 << 64) - 1


def splitmix64(state):
    """Yields SplitMix64 outputs (reference for the Swift generator)."""
    while True:
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        yield z ^ (z >> 31)


def xoshiro256starstar(seed):
    """Yields xoshiro256** outputs, state seeded with four SplitMix64 outputs."""
    sm = splitmix64(seed)
    s = [next(sm) for _ in range(4)]
    rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64
    while True:
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        yield result


def main():
    os.makedirs(OUT, exist_ok=True)
    docs = build_documents()
    lines = [json.dumps({"text": t, "meta": {"pile_set_name": s}}, ensure_ascii=False).encode("utf-8") + b"\n"
             for s, t in docs]
    half = len(lines) // 2
    cctx = zstandard.ZstdCompressor(level=19, write_content_size=False)
    blob = cctx.compress(b"".join(lines[:half])) + cctx.compress(b"".join(lines[half:]))
    with open(os.path.join(OUT, "fixture.jsonl.zst"), "wb") as f:
        f.write(blob)

    tokenizers = {"fixture": Tokenizer.from_file(os.path.join(ROOT, "Fixtures", "tokenizer", "fixture-tokenizer.json"))}
    neox = os.path.join(SHARED, "gpt-neox-20b-tokenizer.json")
    if os.path.exists(neox):
        tokenizers["gpt-neox-20b"] = Tokenizer.from_file(neox)
    golden, offset = [], 0
    for n, ((subset, text), line) in enumerate(zip(docs, lines)):
        entry = {"line": n + 1, "byte_offset": offset, "subset": subset, "text_utf8_bytes": len(text.encode("utf-8"))}
        for name, tok in tokenizers.items():
            ids = tok.encode(text).ids
            entry[name] = {"count": len(ids), "checksum": checksum(ids)}
        golden.append(entry)
        offset += len(line)
    with open(os.path.join(OUT, "fixture-golden.json"), "w", encoding="utf-8") as f:
        prng = {"seed": 20250415,
                "splitmix64": [str(v) for v, _ in zip(splitmix64(20250415), range(6))],
                "xoshiro256starstar": [str(v) for v, _ in zip(xoshiro256starstar(20250415), range(6))]}
        json.dump({"prng": prng, "sha256": hashlib.sha256(blob).hexdigest(), "frames": 2, "lines": len(lines), "uncompressed_bytes": offset, "documents": golden}, f, indent=1)
        f.write("\n")
    print(f"{len(lines)} documents, {offset} bytes uncompressed, {len(blob)} compressed")


if __name__ == "__main__":
    main()
