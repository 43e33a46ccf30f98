"""Read LongMamba Δ-threshold tables made by `longmamba calibrate` and apply them in transformers.

    import longmamba_tables as lmt
    store = lmt.open("cal.sqlite")              # or lmt.load_export("table.safetensors" / "table.json")
    table = store.table(3)                      # table.lengths, table.training_length, table.fingerprint, …
    row = table.lookup(8000, theta=0.05)        # row.length, row.layers[i].delta_threshold / .global_channel
    lmt.check("cal.sqlite")                     # [] for a healthy store, else one line per problem
    handle = lmt.apply_longmamba(model, table, theta=0.05)   # a transformers Mamba / Mamba-2 / Falcon-Mamba / Zamba2 model
    handle.remove()                             # or: with lmt.apply_longmamba(...): ...
    scales = store.table(5)                     # a delta_scale / a_power table (v5): lmt.ScaleTable; scales.row(8000).scales
    lmt.apply_longmamba(model, scales)          # (= lmt.apply_scales) s_l·Δ or A = −exp(s_l·A_log) in prefill
    lmt.calibrate_scales("cal.sqlite", 1, "model_dir", device="cuda")   # SPSA of a `longmamba calibrate-scales --prepare-only` job
    lmt.passkey(model, tokenizer, table, theta=0.05, lengths=[4096]).to_json()     # = longmamba eval --task passkey
    lmt.perplexity(model, tokenizer, table, text="eval.txt", lengths=[4096]).to_json()  # = longmamba eval
    lmt.fingerprint("model_dir")                # = longmamba inspect --model model_dir
    lmt.tune("cal.sqlite", 1, "model_dir", task="passkey", lengths=[8192], device="cuda")  # = longmamba tune, same store

    python -m longmamba_tables tune --db cal.sqlite --run 1 --model DIR --task passkey --lengths 8k,16k --device cuda
"""
from .errors import (BatchTooLargeError, CalibrationError, EvaluationError, WholePromptError, LongMambaTableError,
                     ModelMismatchError, NewerSchemaError, NotAStoreError, PasskeyError, UnknownMethodError,
                     UnknownTableError, UnsupportedModelError)
from .store import (DEFAULT_THETA, SCALE_METHODS, SUPPORTED_SCHEMA, TIE_RULE, LayerTable, Row, RowLayer, ScaleRow,
                    ScaleTable, Store, Table, TableInfo, check, default_filter_start, load_export, nearest_index, open)
from .apply import (METHODS, LongMambaHandle, ScaleHandle, apply_longmamba, apply_scales, continuing_prefill,
                    remove_longmamba)
from .evaluate import (DEFAULT_DEPTHS, PasskeyPoint, PasskeyPrompts, PasskeyResults, PerplexityPoint, PerplexityResults,
                       PositionBucket, passkey, perplexity)
from .fingerprint import fingerprint
from .evaluations import Evaluation, EvaluationPoint, EvaluationWriter, read_evaluations
from .tune import TuneResult, TuneRow, tune
from .scales import CalibrationResult, calibrate_scales

__version__ = "0.1.0"
__all__ = ["open", "check", "load_export", "Store", "Table", "TableInfo", "LayerTable", "Row", "RowLayer", "nearest_index",
           "default_filter_start", "apply_longmamba", "remove_longmamba", "perplexity", "LongMambaHandle",
           "DEFAULT_THETA", "SUPPORTED_SCHEMA", "TIE_RULE", "LongMambaTableError", "NotAStoreError",
           "NewerSchemaError", "UnknownTableError", "ModelMismatchError", "UnsupportedModelError",
           "continuing_prefill", "passkey", "PasskeyPrompts", "PasskeyPoint", "PasskeyResults", "PerplexityPoint",
           "PerplexityResults", "PositionBucket", "DEFAULT_DEPTHS", "EvaluationError", "PasskeyError",
           "BatchTooLargeError", "fingerprint", "Evaluation", "EvaluationPoint", "EvaluationWriter", "read_evaluations",
           "tune", "TuneResult", "TuneRow", "WholePromptError", "METHODS", "ScaleTable", "ScaleRow", "ScaleHandle",
           "apply_scales", "SCALE_METHODS", "UnknownMethodError", "CalibrationError", "calibrate_scales",
           "CalibrationResult"]
