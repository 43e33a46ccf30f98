// The schema, as GRDB migrations (docs/contracts.md "Store"). A shipped migration is never
// edited: a change is a new migration, and a database of every earlier version opens and
// migrates (tested with a committed v1 file, Fixtures/store/v1.sqlite).
//
//   v1  models, calibration_runs, recordings, threshold_tables, table_layers (+ immutability triggers)
//   v2  the run's identity in columns: calibration_runs.calibration_key (UNIQUE) and description,
//       sampled token ids in run_samples, training_length → sample_length, status only
//       'recording' | 'complete', the unused recorded_quantity column dropped
//   v3  evaluations: one row per evaluated point (table or vanilla, θ, task, length, metric),
//       so `tune` reuses finished points and resumes after a kill
//   v4  where each evaluation point was measured: evaluations.backend ('swift' | 'torch'),
//       device ('cpu', 'cuda:0 (NVIDIA H100 …)') and dtype ('float32' | 'bfloat16' | 'float16');
//       rows of v3 were all measured by the Swift runner on the CPU in float32
//   v5  per-layer scale tables (MambaExtend's delta_scale, Mamba Modulation's a_power):
//       threshold_tables.row_kind ('per_channel' | 'per_layer'), their rows in table_scales, and
//       their SPSA calibration in scale_jobs (parameters, sampled tokens) and scale_steps (every step)
import Foundation
import GRDB

extension CalibrationStore {
    /// Schema version this tool writes and understands.
    public static let schemaVersion = 5

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1: models, runs, recordings, tables") { db in
            try db.execute(sql: """
                CREATE TABLE models (
                    id INTEGER PRIMARY KEY,
                    fingerprint TEXT NOT NULL UNIQUE,
                    architecture TEXT NOT NULL,
                    config_json TEXT NOT NULL DEFAULT '{}',
                    created_at TEXT NOT NULL
                );
                CREATE TABLE calibration_runs (
                    id INTEGER PRIMARY KEY,
                    model_id INTEGER NOT NULL REFERENCES models(id),
                    recorded_quantity TEXT NOT NULL DEFAULT 'delta',
                    corpus_provenance_json TEXT NOT NULL DEFAULT '{}',
                    tokenizer_hash TEXT,
                    seed INTEGER,
                    sample_count INTEGER NOT NULL,
                    training_length INTEGER NOT NULL,
                    layer_count INTEGER NOT NULL,
                    recording_metadata_json TEXT NOT NULL DEFAULT '{}',
                    tool_version TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('recording', 'complete', 'failed')),
                    created_at TEXT NOT NULL
                );
                CREATE TABLE recordings (
                    run_id INTEGER NOT NULL REFERENCES calibration_runs(id),
                    sample_index INTEGER NOT NULL,
                    layer_index INTEGER NOT NULL,
                    token_count INTEGER NOT NULL,
                    channel_count INTEGER NOT NULL,
                    encoding TEXT NOT NULL,
                    delta_blob BLOB NOT NULL,
                    a_shape_json TEXT NOT NULL,
                    a_values BLOB NOT NULL,
                    content_hash TEXT NOT NULL,
                    PRIMARY KEY (run_id, sample_index, layer_index)
                );
                CREATE TABLE threshold_tables (
                    id INTEGER PRIMARY KEY,
                    run_id INTEGER NOT NULL REFERENCES calibration_runs(id),
                    method TEXT NOT NULL,
                    parameters_json TEXT NOT NULL,
                    clamp_fraction REAL,
                    aggregation TEXT,
                    interval_tokens INTEGER,
                    max_length INTEGER,
                    training_length INTEGER,
                    layer_count INTEGER NOT NULL,
                    length_count INTEGER NOT NULL,
                    content_hash TEXT NOT NULL,
                    tool_version TEXT NOT NULL,
                    schema_version INTEGER NOT NULL,
                    created_at TEXT NOT NULL
                );
                CREATE INDEX threshold_tables_by_hash ON threshold_tables(content_hash);
                CREATE TABLE table_layers (
                    table_id INTEGER NOT NULL REFERENCES threshold_tables(id),
                    layer_index INTEGER NOT NULL,
                    channel_count INTEGER NOT NULL,
                    length_count INTEGER NOT NULL,
                    lengths_i64 BLOB NOT NULL,
                    delta_thresholds_f32 BLOB NOT NULL,
                    kept_fractions_f32 BLOB NOT NULL,
                    decay_budgets_f32 BLOB NOT NULL,
                    cumulative_decays_f32 BLOB NOT NULL,
                    a_values_f32 BLOB NOT NULL,
                    a_shape_json TEXT NOT NULL,
                    PRIMARY KEY (table_id, layer_index)
                );
                CREATE TRIGGER threshold_tables_are_immutable BEFORE UPDATE ON threshold_tables
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable; solve again to add a new one'); END;
                CREATE TRIGGER threshold_tables_are_never_deleted BEFORE DELETE ON threshold_tables
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                CREATE TRIGGER table_layers_are_immutable BEFORE UPDATE ON table_layers
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                CREATE TRIGGER table_layers_are_never_deleted BEFORE DELETE ON table_layers
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                PRAGMA user_version = 1;
                """)
        }
        m.registerMigration("v2: run identity in columns, sampled tokens in run_samples") { db in
            // v1 kept calibration_key, calibration_description and all K × L token ids inside
            // recording_metadata_json; move them out before rebuilding the table.
            try db.execute(sql: """
                CREATE TABLE run_samples (
                    run_id INTEGER NOT NULL REFERENCES calibration_runs(id),
                    sample_index INTEGER NOT NULL,
                    token_count INTEGER NOT NULL,
                    token_ids_i32 BLOB NOT NULL,
                    PRIMARY KEY (run_id, sample_index)
                );
                """)
            let runs = try Row.fetchAll(db, sql: "SELECT id, recording_metadata_json FROM calibration_runs")
            for row in runs {
                // A damaged v1 file may hold NULL or another type here: skip the row rather than
                // trap (GRDB's plain subscript crashes on a value it cannot convert).
                guard let id = Int64.fromDatabaseValue(row["id"] as DatabaseValue),
                      let json = String.fromDatabaseValue(row["recording_metadata_json"] as DatabaseValue),
                      let metadata = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                      let sequences = metadata["sequences"] as? [[NSNumber]] else { continue }
                for (k, s) in sequences.enumerated() {
                    try RunSampleRecord(run: id, sample: k, tokens: s.map { Int32(truncating: $0) }).insert(db)
                }
            }
            // SQLite's documented way to change a CHECK constraint: a new table, copy, drop, rename
            // (foreign keys are checked once the migration ends).
            try db.execute(sql: """
                CREATE TABLE calibration_runs_v2 (
                    id INTEGER PRIMARY KEY,
                    model_id INTEGER NOT NULL REFERENCES models(id),
                    calibration_key TEXT UNIQUE,
                    description TEXT,
                    corpus_provenance_json TEXT NOT NULL DEFAULT '{}',
                    tokenizer_hash TEXT,
                    seed INTEGER,
                    sample_count INTEGER NOT NULL,
                    sample_length INTEGER NOT NULL,
                    layer_count INTEGER NOT NULL,
                    recording_metadata_json TEXT NOT NULL DEFAULT '{}',
                    tool_version TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('recording', 'complete')),
                    created_at TEXT NOT NULL
                );
                INSERT INTO calibration_runs_v2 (id, model_id, calibration_key, description, corpus_provenance_json, tokenizer_hash,
                        seed, sample_count, sample_length, layer_count, recording_metadata_json, tool_version, status, created_at)
                    SELECT id, model_id,
                        CASE WHEN json_valid(recording_metadata_json) THEN json_extract(recording_metadata_json, '$.calibration_key') END,
                        CASE WHEN json_valid(recording_metadata_json) THEN json_extract(recording_metadata_json, '$.calibration_description') END,
                        corpus_provenance_json, tokenizer_hash, seed, sample_count, training_length, layer_count,
                        CASE WHEN json_valid(recording_metadata_json)
                             THEN json_remove(recording_metadata_json, '$.calibration_key', '$.calibration_description', '$.sequences')
                             ELSE recording_metadata_json END,
                        tool_version, CASE status WHEN 'complete' THEN 'complete' ELSE 'recording' END, created_at
                    FROM calibration_runs;
                DROP TABLE calibration_runs;
                ALTER TABLE calibration_runs_v2 RENAME TO calibration_runs;
                PRAGMA user_version = 2;
                """)
        }
        m.registerMigration("v3: evaluations") { db in
            try db.execute(sql: """
                CREATE TABLE evaluations (
                    id INTEGER PRIMARY KEY,
                    point_key TEXT NOT NULL UNIQUE,
                    evaluation_key TEXT NOT NULL,
                    table_id INTEGER REFERENCES threshold_tables(id),
                    theta REAL,
                    task TEXT NOT NULL,
                    length INTEGER NOT NULL,
                    metric TEXT NOT NULL,
                    value REAL NOT NULL,
                    detail_json TEXT NOT NULL DEFAULT '{}',
                    text_hash TEXT NOT NULL,
                    tool_version TEXT NOT NULL,
                    created_at TEXT NOT NULL
                );
                CREATE INDEX evaluations_by_key ON evaluations(evaluation_key);
                PRAGMA user_version = 3;
                """)
        }
        m.registerMigration("v4: where evaluations were measured") { db in
            try db.execute(sql: """
                ALTER TABLE evaluations ADD COLUMN backend TEXT NOT NULL DEFAULT 'swift';
                ALTER TABLE evaluations ADD COLUMN device TEXT NOT NULL DEFAULT 'cpu';
                ALTER TABLE evaluations ADD COLUMN dtype TEXT NOT NULL DEFAULT 'float32';
                PRAGMA user_version = 4;
                """)
        }
        m.registerMigration("v5: per-layer scale tables and their calibration") { db in
            try db.execute(sql: """
                ALTER TABLE threshold_tables ADD COLUMN row_kind TEXT NOT NULL DEFAULT 'per_channel';
                CREATE TABLE table_scales (
                    table_id INTEGER NOT NULL REFERENCES threshold_tables(id),
                    layer_index INTEGER NOT NULL,
                    length_count INTEGER NOT NULL,
                    lengths_i64 BLOB NOT NULL,
                    scales_f32 BLOB NOT NULL,
                    PRIMARY KEY (table_id, layer_index)
                );
                CREATE TRIGGER table_scales_are_immutable BEFORE UPDATE ON table_scales
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                CREATE TRIGGER table_scales_are_never_deleted BEFORE DELETE ON table_scales
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                CREATE TABLE scale_jobs (
                    id INTEGER PRIMARY KEY,
                    job_key TEXT NOT NULL UNIQUE,
                    run_id INTEGER NOT NULL REFERENCES calibration_runs(id),
                    method TEXT NOT NULL,
                    parameters_json TEXT NOT NULL,
                    sample_count INTEGER NOT NULL,
                    sample_length INTEGER NOT NULL,
                    token_ids_i32 BLOB NOT NULL,
                    table_id INTEGER REFERENCES threshold_tables(id),
                    created_at TEXT NOT NULL
                );
                CREATE TABLE scale_steps (
                    job_id INTEGER NOT NULL REFERENCES scale_jobs(id),
                    length INTEGER NOT NULL,
                    step INTEGER NOT NULL,
                    log_scales_f32 BLOB NOT NULL,
                    loss_plus REAL,
                    loss_minus REAL,
                    best_loss REAL NOT NULL,
                    best_log_scales_f32 BLOB NOT NULL,
                    outcome TEXT NOT NULL,
                    backend TEXT NOT NULL DEFAULT 'swift',
                    device TEXT NOT NULL DEFAULT 'cpu',
                    dtype TEXT NOT NULL DEFAULT 'float32',
                    created_at TEXT NOT NULL,
                    PRIMARY KEY (job_id, length, step)
                );
                PRAGMA user_version = 5;
                """)
        }
        return m
    }
}
