#!/usr/bin/env python3
"""Golden files for the Swift BPE tokenizer, made with Hugging Face `tokenizers`.

1. Trains the small fixture tokenizer (byte-level BPE, GPT-NeoX-like settings: NFC, ByteLevel,
   `<|endoftext|>` id 0, `<|padding|>` id 1, normalized space-run added tokens) on
   redistributable text: the license texts in /usr/share/common-licenses (verbatim copying is
   permitted by each) and the sentences below, written for this project.
   -> Fixtures/tokenizer/fixture-tokenizer.json (2048 tokens; also the fixture model's vocab)
2. Encodes the CASES below with it and with GPT-NeoX-20B (when ../shared/data has it).
   -> Fixtures/tokenizer/golden-fixture.json, Fixtures/tokenizer/golden-gpt-neox-20b.json
3. Runs HF's NFC normalizer on every code point it changes and on decomposed characters.
   -> Fixtures/tokenizer/nfc-golden.json

Run with the reference venv:  /tmp/reference-venv/bin/python scripts/make_tokenizer_golden.py
"""
import hashlib
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Fixtures", "tokenizer")
SHARED = os.environ.get("LONGMAMBA_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
LICENSES = "/usr/share/common-licenses"
LICENSE_FILES = ["Apache-2.0", "Artistic", "BSD", "CC0-1.0", "GFDL-1.3", "GPL-2", "GPL-3",
                 "LGPL-2.1", "LGPL-3", "MPL-2.0"]

# Written for this project (public domain); gives the trainer some non-legal, non-English text.
EXTRA_TRAINING = [
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "def scan(self, x):\n    for i in range(10):\n        yield x[i] * 2\n",
    "func encode(_ text: String) -> [Int] {\n\treturn tokens.map { $0.id }\n}\n",
    "Numbers: 0 1 2 3 42 1234567 3.14159 2.71828 1e-5 0x1F 100% $12.50",
    "Naïve café résumé, déjà vu, façade, Straße, smörgåsbord, São Paulo, Zürich.",
    "日本語のテキストです。中文文本。한국어 텍스트입니다。",
    "Русский текст, ελληνικά, עברית, العربية, हिन्दी, ไทย.",
    "Emoji: 😀 🚀 👍🏽 👨‍👩‍👧 🇫🇷 ❤️",
    "She said: 'I'll go', we'd agree, they're here, you've seen, it's ok, I'm fine, don't.",
]

SPACE_RUNS = [" " * n for n in range(9, 1, -1)]  # 9..2 spaces, like GPT-NeoX's 24..2

CASES = [
    ("empty", ""),
    ("hello", "Hello world"),
    ("fox", "The quick brown fox jumps over the lazy dog."),
    ("prose", "It was the best of times, it was the worst of times, it was the age of wisdom, "
              "it was the age of foolishness, it was the epoch of belief."),
    ("contractions", "I'm sure you'll see they've said it's what we'd've done; don't, can't, won't. 'S 'LL 're'"),
    ("apostrophe_runs", "''s ' 's rock'n'roll ''' '"),
    ("code_python", "def f(x, y=3):\n    return {'a': x ** 2, \"b\": [y, -1]}  # comment\n"),
    ("code_swift", "struct S {\n\tlet x: Int\n\tfunc g() -> Int { x &+ 1 }\n}\n"),
    ("code_c", "int main(void){for(int i=0;i<10;++i){printf(\"%d\\n\",i);}return 0;}"),
    ("numbers", "0 1 12 123 1234 12345 123456 3.14159 -2.5e-10 1,000,000 ½ ² Ⅻ ٣ ౧"),
    ("spaces_runs", "a b  c   d    e     f      g       h        i         j                         k"),
    ("space_30", "x" + " " * 30 + "y"),
    ("leading_trailing", "   leading and trailing   "),
    ("tabs_newlines", "a\tb\t\tc\n\nd\r\ne \n f\n\n\n   \n\tg"),
    ("only_whitespace", " \t\n  \n\n   "),
    ("single_space", " "),
    ("unicode_spaces", "a\u00a0b\u2003c\u3000d\u2028e\u0085f\u202fg"),
    ("control_chars", "a\u0000b\u0001c\u001bd\u001ce\u001ff\u007fg\u200bh\ufeffi"),
    ("emoji", "I ❤️ 🍕! 👍🏽 👨‍👩‍👧‍👦 🇯🇵 🏳️‍🌈 😀😀😀"),
    ("cjk", "日本語のテキスト、中文的文本。한국어 텍스트. 東京タワー"),
    ("rtl", "שלום עולם! مرحبا بالعالم. السلام عليكم ١٢٣"),
    ("indic_thai", "नमस्ते दुनिया। สวัสดีชาวโลก"),
    ("combining_nfc", "e\u0301 a\u0308 n\u0303 A\u030a o\u0302\u0323 \u1100\u1161\u11a8 cafe\u0301"),
    ("already_nfc", "é ä ñ Å ộ 각 café"),
    ("nfc_singletons", "\u212b \u2126 \u0344 \u0958 \uf900"),
    ("math_symbols", "∀x∈ℝ: x²≥0, ∑ᵢ aᵢ = π ≈ 3.14 → ∞ ≠ ±√2"),
    ("mixed_scripts", "Ελληνικά Русский Հայերեն ქართული አማርኛ"),
    ("special_inline", "hi<|endoftext|>there <|padding|> and <|endoftext|><|endoftext|>"),
    ("special_alone", "<|endoftext|>"),
    ("special_partial", "<|endoftext| <|endof <|"),
    ("urls_markup", "See https://example.com/a?b=c&d=e#f or <a href=\"x\">link</a> **bold** _it_ `code`"),
    ("json_like", "{\"text\": \"line\\nbreak\", \"meta\": {\"pile_set_name\": \"Pile-CC\"}}"),
    ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis " + "ab" * 200),
    ("repeats", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ================================== ........"),
    ("replacement_char", "bad \ufffd here \ufffd\ufffd"),
    ("private_use_astral", "\ue000 \U0010fffd \U0001d11e \U0001f9ea"),
    ("mixed_punct_space", "Hello ,world ! ?? ... -- -> (x) [y] {z} \"q\" 'r' `s`"),
]

def fuzz_cases(n=200, seed=7):
    """Random strings over many scripts and categories (letters, combining marks, digits,
    spaces, controls, emoji, Hangul jamo, unassigned), seeded so the golden is reproducible."""
    import random
    rng = random.Random(seed)
    ranges = [(0x20, 0x7F), (0x09, 0x0E), (0xA0, 0x250), (0x300, 0x370), (0x370, 0x530), (0x590, 0x700),
              (0x900, 0xE00), (0x1100, 0x1200), (0x1E00, 0x2000), (0x2000, 0x2070), (0x20A0, 0x2400),
              (0x3000, 0x3100), (0x4E00, 0x4F00), (0xAC00, 0xAD00), (0xFE00, 0xFF00), (0x1F300, 0x1FA00),
              (0x10000, 0x10100), (0xE0000, 0xE0080), (0x1D400, 0x1D800), (0x0, 0x20)]
    words = ["the", "of", " and", "  ", "   ", "\n", "\n\n", "'s", "'ll", " 've", "123", "<|endoftext|>", "\t", "    x"]
    out = []
    for k in range(n):
        parts = []
        for _ in range(rng.randint(1, 30)):
            if rng.random() < 0.4:
                parts.append(rng.choice(words))
            else:
                lo, hi = rng.choice(ranges)
                parts.append("".join(chr(c) for c in (rng.randrange(lo, hi) for _ in range(rng.randint(1, 6)))
                                     if not 0xD800 <= c <= 0xDFFF))
        out.append((f"fuzz_{k}", "".join(parts)))
    return out


# Invalid UTF-8 byte strings: the expected ids are those of the Python str made with
# bytes.decode('utf-8', errors='replace').
BYTE_CASES = [
    ("truncated_3byte", b"\xe2\x82a"),
    ("overlong_and_continuations", b"\xf0\x80\x80z"),
    ("surrogate", b"x\xed\xa0\x80y"),
    ("lone_ff", b"ab\xffcd"),
    ("truncated_at_end", b"end \xf0\x9f\x98"),
    ("latin1_bytes", b"caf\xe9 na\xefve"),
]


def train_fixture_tokenizer():
    texts = []
    for name in LICENSE_FILES:
        with open(os.path.join(LICENSES, name), encoding="utf-8") as f:
            texts.append(f.read())
    texts.extend(EXTRA_TRAINING * 20)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=2048 - len(SPACE_RUNS),
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([tokenizers.AddedToken(s, normalized=True, special=False) for s in SPACE_RUNS])
    assert tok.get_vocab_size() == 2048, tok.get_vocab_size()
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    return tok


def golden(tok, name, path):
    cases = []
    for case_name, text in CASES + fuzz_cases():
        ids = tok.encode(text).ids
        cases.append({
            "name": case_name, "text": text, "ids": ids,
            "decoded": tok.decode(ids),
            "decoded_with_special": tok.decode(ids, skip_special_tokens=False),
        })
    byte_cases = []
    for case_name, raw in BYTE_CASES:
        text = raw.decode("utf-8", errors="replace")
        try:
            raw.decode("utf-8")
            first_invalid = None
        except UnicodeDecodeError as e:
            first_invalid = e.start
        byte_cases.append({"name": case_name, "hex": raw.hex(), "ids": tok.encode(text).ids,
                           "first_invalid_offset": first_invalid})
    # Decoding id lists cut inside multi-byte characters (invalid UTF-8 → U+FFFD, as HF does).
    partial = []
    for case_name in ["cjk", "emoji", "combining_nfc", "rtl"]:
        ids = tok.encode(dict(CASES)[case_name]).ids
        for cut in (ids[:-1], ids[1:], ids[1:-1], ids[len(ids) // 2:]):
            partial.append({"ids": cut, "decoded": tok.decode(cut)})
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "tokenizer": name, "tokenizer_sha256": sha, "tokenizers_version": tokenizers.__version__,
        "vocab_size": tok.get_vocab_size(), "eos_id": tok.token_to_id("<|endoftext|>"),
        "cases": cases, "byte_cases": byte_cases, "partial_decodes": partial,
    }


def nfc_golden():
    """HF's NFC normalizer on every code point it changes, on the NFD form of every character
    with a canonical decomposition, on Hangul syllables and on out-of-order combining marks.
    Also checks the Swift fast path's premise: text whose scalars are all below U+0300 is
    already NFC (nothing there changes or composes)."""
    import unicodedata
    nfc = normalizers.NFC()
    inputs = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if nfc.normalize_str(c) != c:
            assert cp >= 0x300, hex(cp)
            inputs.append(c)
        d = unicodedata.decomposition(c)
        if d and not d.startswith("<"):
            parts = "".join(chr(int(x, 16)) for x in d.split())
            if max(parts) < "\u0300":
                assert nfc.normalize_str(parts) == parts, hex(cp)
            inputs.append(parts)
    inputs.extend(unicodedata.normalize("NFD", chr(cp)) for cp in range(0xAC00, 0xD7A4, 37))
    inputs.extend(["a\u0323\u0302", "a\u0302\u0323", "q\u0307\u0323", "e\u0301\u0301", "\u0301e",
                   "\u1100\u1161", "\u1100\u1161\u11a8x", "\u0915\u093c", "\u00e9\u0323"])
    # Hangul jamo at and just outside the conjoining ranges, and LV syllables followed by T.
    for l in (0x1100, 0x1105, 0x1112, 0x1113):
        for v in (0x1160, 0x1161, 0x1175, 0x1176):
            for t in (None, 0x11A7, 0x11A8, 0x11C2, 0x11C3):
                inputs.append(chr(l) + chr(v) + (chr(t) if t else ""))
    for syllable in (0xAC00, 0xAC01, 0xB9C8, 0xD788, 0xD7A3):
        for t in (0x11A7, 0x11A8, 0x11C2, 0x11C3):
            inputs.append(chr(syllable) + chr(t) + "\u0301")
    return [[s, nfc.normalize_str(s)] for s in inputs]


def write_json(obj, path):
    """One line per top-level field and per list item: compact, yet diffs stay readable."""
    def dumps(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    lines = []
    for key, value in obj.items():
        if isinstance(value, list):
            items = ",\n  ".join(dumps(v) for v in value)
            lines.append(f"{dumps(key)}:[\n  {items}\n]" if value else f"{dumps(key)}:[]")
        else:
            lines.append(f"{dumps(key)}:{dumps(value)}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    fixture_path = os.path.join(OUT, "fixture-tokenizer.json")
    train_fixture_tokenizer().save(fixture_path)
    fixture = Tokenizer.from_file(fixture_path)  # golden from the saved file, as Swift reads it
    write_json(golden(fixture, "fixture-tokenizer.json", fixture_path), os.path.join(OUT, "golden-fixture.json"))
    # The same tokenizer with add_prefix_space on (the Swift test makes the same change).
    with open(fixture_path, encoding="utf-8") as f:
        variant = json.load(f)
    variant["pre_tokenizer"]["add_prefix_space"] = True
    prefixed = Tokenizer.from_str(json.dumps(variant))
    write_json(golden(prefixed, "fixture-tokenizer.json with pre_tokenizer.add_prefix_space = true", fixture_path),
               os.path.join(OUT, "golden-fixture-prefix-space.json"))
    write_json({"tokenizers_version": tokenizers.__version__, "cases": nfc_golden()}, os.path.join(OUT, "nfc-golden.json"))
    neox_path = os.path.join(SHARED, "gpt-neox-20b-tokenizer.json")
    if os.path.exists(neox_path):
        neox = Tokenizer.from_file(neox_path)
        write_json(golden(neox, "gpt-neox-20b-tokenizer.json", neox_path), os.path.join(OUT, "golden-gpt-neox-20b.json"))
    else:
        print(f"skipping GPT-NeoX golden: {neox_path} not found", file=sys.stderr)


if __name__ == "__main__":
    main()
