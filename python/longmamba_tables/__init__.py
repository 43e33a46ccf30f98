"""Read LongMamba Δ-threshold tables made by `longmamba calibrate` and apply them in transformers.

    import longmamba_tables as lmt
    store = lmt.open("cal.sqlite")              # or lmt.load_export("table.safetensors" / "table.json")
    table = store.table(3)                      # table.lengths, table.training_length, table.fingerprint, …
    row = table.lookup(8000, theta=0.05)        # row.length, row.layers[i].delta_threshold / .global_channel
    lmt.check("cal.sqlite")                     # [] for a healthy store, else one line per problem
    handle = lmt.apply_longmamba(model, table, theta=0.05)   # a transformers Mamba / Mamba-2 / Falcon-Mamba model
    handle.remove()                             # or: with lmt.apply_longmamba(...): ...
"""
from .errors import (LongMambaTableError, ModelMismatchError, NewerSchemaError, NotAStoreError,
                     UnknownTableError, UnsupportedModelError)
from .store import (DEFAULT_THETA, SUPPORTED_SCHEMA, TIE_RULE, LayerTable, Row, RowLayer, Store, Table, TableInfo,
                    check, default_filter_start, load_export, nearest_index, open)
from .apply import LongMambaHandle, apply_longmamba, perplexity, remove_longmamba

__version__ = "0.1.0"
__all__ = ["open", "check", "load_export", "Store", "Table", "TableInfo", "LayerTable", "Row", "RowLayer", "nearest_index",
           "default_filter_start", "apply_longmamba", "remove_longmamba", "perplexity", "LongMambaHandle",
           "DEFAULT_THETA", "SUPPORTED_SCHEMA", "TIE_RULE", "LongMambaTableError", "NotAStoreError",
           "NewerSchemaError", "UnknownTableError", "ModelMismatchError", "UnsupportedModelError"]
