// The SQLite store (GRDB, WAL, migrations). Readable with the plain `sqlite3` shell:
//
//   models              one row per model fingerprint (architecture, config JSON)
//   calibration_runs    one calibration set: its calibration key, corpus provenance, tokenizer
//                       hash, seed, K, sample length L, status (RunStatus)
//   run_samples         the token ids of each sampled sequence of a run
//   recordings          Δ of one (run, sample, layer) in a stored representation (exact / sketch)
//   threshold_tables    immutable solved tables: method + parameters JSON (+ columns for LongMamba's
//                       p, aggregation, interval, max length), content hash, created-at
//   table_layers        per-layer arrays of a table: lengths, thresholds, kept fractions, budgets,
//                       cumulative decays, A (little-endian blobs; shapes in the columns)
//
// Tables and their layers are immutable (triggers refuse UPDATE and DELETE). Every write runs
// in one transaction, so an interrupted write leaves no partial run or table. The store only
// persists: solving is `TableService`, the θ rule is `GlobalChannels`, evaluation is `Evaluation/`.
// Schema and migrations: Schema.swift; one record type per table: Records.swift.
import Foundation
import GRDB
import Synchronization

public final class CalibrationStore: Sendable {
    public static let longMambaMethod = "longmamba"
    public let path: String
    let writer: any DatabaseWriter
    /// Tables whose rows and content hash this store object has checked (`verifyTable`).
    let verifiedTables = Mutex<Set<Int64>>([])

    /// Opens (creating and migrating if needed) a store. `readOnly` never writes, not even migrations
    /// (a database of an older schema is then refused with `StoreError.olderSchema`).
    /// `busyTimeout`: seconds to wait for another writer before failing with `StoreError.locked`.
    public init(path: String, readOnly: Bool = false, busyTimeout: Double = 5) throws {
        self.path = path
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout)
        config.foreignKeysEnabled = true
        if readOnly {
            guard FileManager.default.fileExists(atPath: path) else {
                throw StoreError.noSuchDatabase(path: path)
            }
            config.readonly = true
            do { writer = try DatabaseQueue(path: path, configuration: config) } catch { throw CalibrationStore.map(error, path: path) }
            let (version, foreign) = try CalibrationStore.checkSchema(writer, path: path)
            if version == 0 { throw StoreError.noLongMambaSchema(path: path, foreignTables: foreign) }
            if version < CalibrationStore.schemaVersion {
                throw StoreError.olderSchema(path: path, found: version, current: CalibrationStore.schemaVersion)
            }
            return
        }
        // A writer needs room for the -shm and -wal files of WAL mode. Refused up front on a full
        // disk: SQLite would leave a truncated -shm behind that no reader could map until space is freed.
        if FileManager.default.fileExists(atPath: path), !FileManager.default.fileExists(atPath: path + "-shm"),
           let free = CalibrationStore.freeBytes(near: path), free < 256 << 10 {
            throw StoreError.diskFull(path: path)
        }
        do {
            // Migrate on a connection of its own, closed before the pool opens, so that no pooled
            // connection ever saw the old schema.
            let migrating = try DatabaseQueue(path: path, configuration: config)
            // A new or empty file gets the schema; another application's database is left alone.
            let (version, foreign) = try CalibrationStore.checkSchema(migrating, path: path)
            if version == 0 && !foreign.isEmpty { throw StoreError.noLongMambaSchema(path: path, foreignTables: foreign) }
            // Two processes opening a new file may migrate at once: the loser's CREATE fails with
            // "already exists" while the winner may still be applying later migrations. That is
            // fine once the schema is current, so the loser waits for it (up to ~5 s) and retries
            // the migrations still missing; any other failure is reported as it is.
            var attempt = 0
            while true {
                do { try CalibrationStore.migrator.migrate(migrating); break } catch {
                    if try CalibrationStore.checkSchema(migrating, path: path).version == CalibrationStore.schemaVersion { break }
                    let racing = (error as? DatabaseError).map { $0.resultCode == .SQLITE_BUSY || $0.resultCode == .SQLITE_LOCKED
                        || ($0.message ?? "").contains("already exists") } ?? false
                    attempt += 1
                    guard racing, attempt < 50 else { throw error }
                    Thread.sleep(forTimeInterval: 0.1)
                }
            }
            try migrating.close()
            writer = try DatabasePool(path: path, configuration: config)  // WAL
        } catch { throw CalibrationStore.map(error, path: path) }
    }

    /// Closes the connections. A writer that is the file's last connection also returns it to
    /// SQLite's rollback journal (the pool switches it to WAL again on the next open), so a
    /// finished run leaves one self-contained file: no `-wal` or `-shm` beside it, readable when
    /// copied alone or from read-only media. With other processes still connected the switch is
    /// refused (busy) and the file simply stays in WAL mode. On a nearly full disk nothing is
    /// closed: the checkpoint could not complete, and a `-shm` removed there could not be created
    /// again by the next reader until space is freed.
    public func close() throws {
        if let pool = writer as? DatabasePool {
            let wal = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int64) ?? 0
            guard let free = Self.freeBytes(near: path), free > wal + (4 << 20) else { return }
            pool.releaseMemory()   // closes the idle reader connections, so the writer can be the last one
            _ = try? pool.writeWithoutTransaction { db in try String.fetchOne(db, sql: "PRAGMA journal_mode = DELETE") }
            try pool.close()
        } else if let queue = writer as? DatabaseQueue {
            try queue.close()
        }
    }

    deinit { try? close() }

    /// Refuses a database whose schema is newer than this tool's; returns its version and, for
    /// a database without longmamba's schema (version 0), the tables it holds — both read in one
    /// transaction, so a concurrent migration is seen either before or after, never half-way.
    /// sqlite_* internals and GRDB's bookkeeping table (left by a migration killed before its
    /// first step) do not count as foreign.
    private static func checkSchema(_ reader: any DatabaseReader, path: String) throws -> (version: Int, foreignTables: [String]) {
        let (version, superseded, tables): (Int, Bool, [String])
        do {
            (version, superseded, tables) = try reader.read { db in
                let v = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
                let s = try db.tableExists("grdb_migrations") ? try CalibrationStore.migrator.hasBeenSuperseded(db) : false
                let t = v > 0 ? [] : try String.fetchAll(db, sql: """
                    SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'grdb_migrations' ORDER BY name
                    """)
                return (v, s, t)
            }
        } catch { throw CalibrationStore.map(error, path: path) }
        if version > CalibrationStore.schemaVersion || superseded {
            throw StoreError.newerSchema(path: path, found: max(version, CalibrationStore.schemaVersion + 1), supported: CalibrationStore.schemaVersion)
        }
        return (version, tables)
    }

    /// Bytes available to this user on the file system holding `path`'s directory.
    static func freeBytes(near path: String) -> Int64? {
        let dir = (path as NSString).deletingLastPathComponent
        var s = statvfs()
        guard statvfs(dir.isEmpty ? "." : dir, &s) == 0 else { return nil }
        return Int64(s.f_bavail) * Int64(s.f_frsize)
    }

    /// Maps SQLite failures to errors that say what to do.
    static func map(_ error: any Error, path: String) -> any Error {
        if error is StoreError { return error }
        // A column SQLite returns with a type the record cannot take (text in an INTEGER column…).
        if error is RowDecodingError || error is DecodingError { return StoreError.damagedRow(path: path, detail: SystemMessage.of(error)) }
        guard let e = error as? DatabaseError else { return error }
        switch e.resultCode {
        case .SQLITE_READONLY:
            return StoreError.readOnly(path: path)
        case .SQLITE_CANTOPEN:
            let dir = (path as NSString).deletingLastPathComponent
            if !FileManager.default.isWritableFile(atPath: dir.isEmpty ? "." : dir) { return StoreError.readOnly(path: path) }
            return StoreError.database(path: path, detail: "cannot open: \(e.message ?? "unknown reason")")
        case .SQLITE_BUSY, .SQLITE_LOCKED: return StoreError.locked(path: path)
        case .SQLITE_FULL: return StoreError.diskFull(path: path)
        // Creating the -wal or -shm file on a full file system fails as an I/O error, not SQLITE_FULL.
        case .SQLITE_IOERR where freeBytes(near: path).map { $0 < 1 << 20 } ?? false: return StoreError.diskFull(path: path)
        case .SQLITE_NOTADB, .SQLITE_CORRUPT: return StoreError.notADatabase(path: path, detail: e.message ?? "\(e.resultCode)")
        default: return StoreError.database(path: path, detail: "\(e)")
        }
    }

    func write<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try writer.write(body) } catch { throw CalibrationStore.map(error, path: path) }
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try writer.read(body) } catch { throw CalibrationStore.map(error, path: path) }
    }

    static func now() -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date())
    }

}
