"""Vanilla against LongMamba perplexity of a transformers model on a text, with a stored table.

    python examples/perplexity.py [MODEL_DIR] [DB] [TABLE_ID] [TEXT] [LENGTH]

Defaults: the repository's demo model and the table `make run` writes (tables/demo-model.sqlite,
table 1), its held-out text, 2048 tokens (16 × the demo model's training length).
"""
import os
import sys

import tokenizers
import torch
import transformers

import longmamba_tables as lmt

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
model_dir, db, table_id, text, length = (sys.argv[1:] + [None] * 5)[:5]
model_dir = model_dir or os.path.join(root, "Fixtures", "demo-model")
db = db or os.path.join(root, "tables", "demo-model.sqlite")
text = text or os.path.join(root, "Fixtures", "demo-corpus", "eval.txt")

# The five lines of the README:
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
ids = torch.tensor([tokenizers.Tokenizer.from_file(f"{model_dir}/tokenizer.json").encode(open(text).read()).ids[:int(length or 2048)]])
print(f"vanilla    perplexity {lmt.perplexity(model, ids):.3f} on {ids.shape[1]} tokens")
with lmt.apply_longmamba(model, lmt.open(db).table(int(table_id or 1)), theta=0.05) as handle:
    print(f"LongMamba  perplexity {lmt.perplexity(model, ids):.3f} (row {handle.last_row.length}, kept {handle.kept_share:.1%} of Δ in global channels)")
