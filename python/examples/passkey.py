"""Passkey retrieval of a transformers model, vanilla and with a stored table: `longmamba eval
--task passkey` in Python (the same prompts, keys, answers and JSON).

    python examples/passkey.py [MODEL_DIR] [TABLE] [THETA] [LENGTHS] [JSON_OUT]

TABLE: an export (`longmamba export --format safetensors`) or DB#ID. Defaults: the repository's
demo model, the export `make run` writes (tables/demo-model.table.safetensors) with θ = 0.01,
lengths 128,256,512,1024, 10 trials per depth, seed 7 (as `make run`).
"""
import os
import sys

import transformers

import longmamba_tables as lmt

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
model_dir, table_name, theta, lengths, out = (sys.argv[1:] + [None] * 5)[:5]
model_dir = model_dir or os.path.join(root, "Fixtures", "demo-model")
table_name = table_name or os.path.join(root, "tables", "demo-model.table.safetensors")
if "#" in table_name:
    db, table_id = table_name.rsplit("#", 1)
    table = lmt.open(db).table(int(table_id))
else:
    table = lmt.load_export(table_name)

model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
results = lmt.passkey(model, os.path.join(model_dir, "tokenizer.json"), table, theta=float(theta or 0.01),
                      lengths=[int(S) for S in (lengths or "128,256,512,1024").split(",")], trials=10, seed=7,
                      fingerprint=lmt.fingerprint(model_dir),   # names the model, checks the table's, lets `report` draw it
                      progress=lambda line: print(line, file=sys.stderr))
print(f"{'length':>8} {'depth':>6} {'vanilla':>8} {'LongMamba':>10} {'kept':>7}")
for p in results.points:
    print(f"{p.length:>8} {p.depth:>6.2f} {p.vanilla_accuracy:>8.0%} {p.longmamba_accuracy:>10.0%} {p.kept_share:>7.3f}")
print(f"{results.prompts_per_second:.2f} prompts/s")
if out:
    with open(out, "w") as f:
        f.write(results.to_json() + "\n")
