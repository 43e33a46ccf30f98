/*
 * lookup: read one layer of a longmamba threshold table with the sqlite3 C API alone.
 *
 *   cc -O2 -o lookup lookup.c -lsqlite3 -lm
 *   ./lookup DB TABLE_ID LENGTH LAYER THETA
 *
 * Written from docs/store-format.md only (no longmamba code): it picks the tabulated length
 * for a prompt of LENGTH tokens, reads τ_c(S) for that row, and marks channel c global when
 * its cumulative decay a_c > θ, compared in float32. Output is one JSON object on stdout;
 * errors go to stderr with exit status 1.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

/* The newest schema version this reader was written against (docs: "A reader should refuse a
 * version newer than it knows"). */
#define KNOWN_SCHEMA_VERSION 5

/* Blobs are little-endian whatever the host is, so decode byte by byte instead of memcpy. */
static uint32_t le_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int64_t le_i64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return (int64_t)v; /* two's complement, as the document says */
}

static float le_f32(const unsigned char *p) {
    uint32_t bits = le_u32(p);
    float f;
    memcpy(&f, &bits, sizeof f); /* reinterpret the IEEE-754 binary32 bits */
    return f;
}

/* %.9g round-trips every float32; non-finite values are not JSON numbers, so they are written
 * as the strings the tool's JSON export uses. */
static void print_f32(float v) {
    if (isnan(v)) printf("\"nan\"");
    else if (isinf(v)) printf(v > 0 ? "\"inf\"" : "\"-inf\"");
    else printf("%.9g", (double)v);
}

/* θ as the user gave it: the shortest of %.15g/%.17g that reads back as the same double. */
static void print_f64(double v) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
    printf("%s", buf);
}

static int parse_i64(const char *text, const char *what, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        fprintf(stderr, "lookup: %s '%s' is not an integer\n", what, text);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* Check that a blob column holds exactly `expected` bytes; a shorter one would be read out of
 * bounds, a longer one means the counts and the blob disagree (damage or a newer layout). */
static int check_blob(sqlite3_stmt *row, int column, sqlite3_int64 expected,
                      int64_t table_id, int64_t layer) {
    const char *name = sqlite3_column_name(row, column);
    if (sqlite3_column_type(row, column) != SQLITE_BLOB && expected > 0) {
        fprintf(stderr, "lookup: table %lld layer %lld: column %s is not a blob\n",
                (long long)table_id, (long long)layer, name);
        return -1;
    }
    sqlite3_int64 size = sqlite3_column_bytes(row, column);
    if (size != expected) {
        fprintf(stderr, "lookup: table %lld layer %lld: column %s has %lld bytes, expected %lld "
                "from channel_count and length_count\n", (long long)table_id, (long long)layer,
                name, (long long)size, (long long)expected);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s DB TABLE_ID LENGTH LAYER THETA\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int64_t table_id, length, layer;
    if (parse_i64(argv[2], "TABLE_ID", &table_id) || parse_i64(argv[3], "LENGTH", &length) ||
        parse_i64(argv[4], "LAYER", &layer))
        return 2;
    if (length <= 0) {
        fprintf(stderr, "lookup: LENGTH must be a positive number of tokens\n");
        return 2;
    }
    char *end;
    double theta = strtod(argv[5], &end);
    if (end == argv[5] || *end != '\0' || !isfinite(theta) || !(theta > 0)) {
        fprintf(stderr, "lookup: THETA '%s' must be a finite number > 0\n", argv[5]);
        return 2;
    }

    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    int status = 1;
    /* Read-only: a reader must never migrate or otherwise touch the store. */
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "lookup: cannot open %s: %s\n", path, db ? sqlite3_errmsg(db) : "out of memory");
        goto done;
    }

    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        fprintf(stderr, "lookup: %s: cannot read the schema version: %s\n", path, sqlite3_errmsg(db));
        goto done;
    }
    int version = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (version > KNOWN_SCHEMA_VERSION) {
        fprintf(stderr, "lookup: %s has schema version %d, newer than the %d this reader knows; "
                "use a newer reader\n", path, version, KNOWN_SCHEMA_VERSION);
        goto done;
    }
    if (version < 1) {
        fprintf(stderr, "lookup: %s has schema version %d: not a longmamba store\n", path, version);
        goto done;
    }

    /* The table's own counts, to cross-check the layer row against. */
    if (sqlite3_prepare_v2(db, "SELECT layer_count, length_count, method FROM threshold_tables WHERE id = ?",
                           -1, &stmt, NULL) != SQLITE_OK) {
        fprintf(stderr, "lookup: %s: %s\n", path, sqlite3_errmsg(db));
        goto done;
    }
    sqlite3_bind_int64(stmt, 1, table_id);
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        fprintf(stderr, "lookup: %s: no table %lld\n", path, (long long)table_id);
        goto done;
    }
    int64_t layer_count = sqlite3_column_int64(stmt, 0);
    int64_t table_length_count = sqlite3_column_int64(stmt, 1);
    /* Version 5 adds per-layer scale tables (delta_scale, a_power) and may hold methods a
       newer tool wrote: this reader applies LongMamba's per-channel thresholds only. */
    const unsigned char *method = sqlite3_column_text(stmt, 2);
    if (method == NULL || strcmp((const char *)method, "longmamba") != 0) {
        fprintf(stderr, "lookup: %s: table %lld has the method '%s', not LongMamba thresholds "
                "(per-channel rows); this reader does not apply it\n",
                path, (long long)table_id, method ? (const char *)method : "(null)");
        sqlite3_finalize(stmt);
        stmt = NULL;
        goto done;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (layer < 0 || layer >= layer_count) {
        fprintf(stderr, "lookup: table %lld has layers 0 to %lld; layer %lld does not exist\n",
                (long long)table_id, (long long)(layer_count - 1), (long long)layer);
        goto done;
    }

    if (sqlite3_prepare_v2(db,
            "SELECT channel_count, length_count, lengths_i64, delta_thresholds_f32, "
            "cumulative_decays_f32 FROM table_layers WHERE table_id = ? AND layer_index = ?",
            -1, &stmt, NULL) != SQLITE_OK) {
        fprintf(stderr, "lookup: %s: %s\n", path, sqlite3_errmsg(db));
        goto done;
    }
    sqlite3_bind_int64(stmt, 1, table_id);
    sqlite3_bind_int64(stmt, 2, layer);
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        fprintf(stderr, "lookup: table %lld: layer %lld is missing from table_layers\n",
                (long long)table_id, (long long)layer);
        goto done;
    }
    int64_t C = sqlite3_column_int64(stmt, 0);
    int64_t T = sqlite3_column_int64(stmt, 1);
    /* Bound the counts before multiplying them, so the expected sizes cannot overflow. */
    if (C <= 0 || T <= 0 || C > (1 << 24) || T > (1 << 24)) {
        fprintf(stderr, "lookup: table %lld layer %lld: implausible channel_count %lld or "
                "length_count %lld\n", (long long)table_id, (long long)layer, (long long)C, (long long)T);
        goto done;
    }
    if (T != table_length_count) {
        fprintf(stderr, "lookup: table %lld layer %lld: length_count %lld differs from the "
                "table's %lld\n", (long long)table_id, (long long)layer, (long long)T,
                (long long)table_length_count);
        goto done;
    }
    if (check_blob(stmt, 2, T * 8, table_id, layer) ||
        check_blob(stmt, 3, T * C * 4, table_id, layer) ||
        check_blob(stmt, 4, C * 4, table_id, layer))
        goto done;
    /* Blob pointers stay valid until the statement is stepped again or finalized. */
    const unsigned char *lengths = sqlite3_column_blob(stmt, 2);
    const unsigned char *thresholds = sqlite3_column_blob(stmt, 3);
    const unsigned char *decays = sqlite3_column_blob(stmt, 4);

    /* Row rule: the nearest tabulated length; on a tie keep the earlier (shorter) one, which a
     * strict "<" over increasing lengths does; beyond the last row the last row is nearest. */
    int64_t row = 0, best_distance = 0, previous = 0;
    for (int64_t t = 0; t < T; t++) {
        int64_t s = le_i64(lengths + 8 * t);
        if (s <= previous) {
            fprintf(stderr, "lookup: table %lld layer %lld: lengths_i64 is not positive and "
                    "increasing at row %lld\n", (long long)table_id, (long long)layer, (long long)t);
            goto done;
        }
        previous = s;
        /* Both values are positive int64, so the difference cannot overflow. */
        int64_t distance = s > length ? s - length : length - s;
        if (t == 0 || distance < best_distance) {
            row = t;
            best_distance = distance;
        }
    }
    int64_t chosen_length = le_i64(lengths + 8 * row);

    /* torch compares a float32 tensor with a Python float in float32: round θ first. */
    float theta32 = (float)theta;
    int64_t global_count = 0;
    for (int64_t c = 0; c < C; c++)
        if (le_f32(decays + 4 * c) > theta32) global_count++;

    printf("{\"table\":%lld,\"requested_length\":%lld,\"length\":%lld,\"layer\":%lld,\"theta\":",
           (long long)table_id, (long long)length, (long long)chosen_length, (long long)layer);
    print_f64(theta);
    printf(",\"delta_threshold\":[");
    for (int64_t c = 0; c < C; c++) {
        if (c) putchar(',');
        print_f32(le_f32(thresholds + 4 * (row * C + c)));
    }
    printf("],\"global_channel\":[");
    for (int64_t c = 0; c < C; c++)
        printf("%s%s", c ? "," : "", le_f32(decays + 4 * c) > theta32 ? "true" : "false");
    printf("],\"global_channel_count\":%lld}\n", (long long)global_count);
    status = 0;

done:
    sqlite3_finalize(stmt); /* harmless on NULL */
    sqlite3_close(db);      /* likewise */
    return status;
}
