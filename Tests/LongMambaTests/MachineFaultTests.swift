// Faults of the machine, for real: a full disk (a size-limited tmpfs mounted by the test) and a
// read-only file system (the same tmpfs remounted read-only). Both need root to mount; elsewhere
// the tests say so and pass without running (the CI machine runs them as root).
import Foundation
import GRDB
import Testing
@testable import LongMamba

enum Mount {
    static func run(_ arguments: [String]) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/mount")
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    /// A tmpfs of `bytes` at a new directory, or nil (not root, no mount).
    static func tmpfs(bytes: Int) -> String? {
        guard getuid() == 0 else { return nil }
        let dir = Tool.directory()
        return run(["-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", dir]) ? dir : nil
    }
    static func remount(_ dir: String, _ options: String) -> Bool { run(["-o", "remount,\(options)", dir]) }
    static func unmount(_ dir: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/umount")
        p.arguments = [dir]
        try? p.run()
        p.waitUntilExit()
    }

    static func bytesUsed(_ path: String) -> Int {
        ["", "-wal", "-shm"].reduce(0) { total, suffix in
            total + ((try? FileManager.default.attributesOfItem(atPath: path + suffix)[.size] as? Int) ?? 0)
        }
    }
}

@Suite(.serialized) struct MachineFaultTests {
    @Test func diskFullDuringCalibrateNamesTheDatabaseKeepsCommittedSamplesAndRerunCompletes() throws {
        guard Tool.executable != nil else { throw Tool.Missing() }
        let reference = Tool.directory() + "/reference.sqlite"
        #expect(try Tool.run(Tool.calibrateArguments(db: reference)).0 == 0)
        let peak = Mount.bytesUsed(reference)
        // Find a size that fills up after some samples are committed (file-system overhead varies).
        for fraction in [0.5, 0.35, 0.65, 0.25, 0.8] {
            guard let dir = Mount.tmpfs(bytes: Int(Double(peak) * fraction) / 4096 * 4096 + 4096) else {
                print("skipped: disk-full test needs root to mount a tmpfs")
                return
            }
            defer { Mount.unmount(dir) }
            let db = dir + "/full.sqlite"
            let (status, log) = try Tool.run(Tool.calibrateArguments(db: db))
            guard status != 0 else { continue }
            let committed = (try? CalibrationStore(path: db, readOnly: true).recordedSamples(run: 1).count) ?? 0
            guard committed > 0 else { continue }
            #expect(log.contains(db) && log.contains("disk full"), "unclear disk-full message: \(log)")
            try Tool.checkStore(db, layers: 2)
            // Free space, rerun: every committed sample is kept, the table is the uninterrupted one.
            #expect(Mount.remount(dir, "size=64m"))
            let (again, againLog) = try Tool.run(Tool.calibrateArguments(db: db))
            #expect(again == 0, "\(againLog)")
            #expect(againLog.contains("\(committed) already committed"), "\(againLog)")
            #expect(try Tool.tableHashes(db) == Tool.tableHashes(reference))
            // The same for solve: a sweep into a full disk stores no partial table.
            let used = Mount.bytesUsed(db)
            #expect(Mount.remount(dir, "size=\((used / 4096 + 3) * 4096)"))
            let sweep = ["sweep", "--db", db, "--run", "1", "--clamp", "0.1,0.2,0.3,0.4,0.5,0.6", "--aggregate", "max,mean", "--interval", "64", "--max-length", "65536"]
            let (sweepStatus, sweepLog) = try Tool.run(sweep)
            #expect(sweepStatus != 0 && sweepLog.contains("disk full"), "sweep did not fill the disk: \(sweepLog)")
            try Tool.checkStore(db, layers: 2)
            #expect(Mount.remount(dir, "size=64m"))
            #expect(try Tool.run(sweep).0 == 0)
            try Tool.checkStore(db, layers: 2)
            #expect(try CalibrationStore(path: db, readOnly: true).tables().count == 13)
            print("disk full: calibrate stopped after \(committed) of 10 samples, sweep stopped part-way; both reran to completion")
            return
        }
        Issue.record("no tmpfs size made calibrate fail with samples committed (peak store size \(peak) bytes)")
    }

    @Test func readOnlyFileSystemIsAClearErrorForWritersAndFineForReaders() throws {
        guard Tool.executable != nil else { throw Tool.Missing() }
        guard let dir = Mount.tmpfs(bytes: 16 << 20) else {
            print("skipped: read-only test needs root to mount a tmpfs")
            return
        }
        defer { Mount.unmount(dir) }
        let db = dir + "/ro.sqlite"
        #expect(try Tool.run(Tool.calibrateArguments(db: db)).0 == 0)
        let before = try Tool.tableHashes(db)
        #expect(Mount.remount(dir, "ro"))
        // A writer says read-only and names the file; a reader still reads.
        let (status, log) = try Tool.run(["solve", "--db", db, "--run", "1", "--clamp", "0.3", "--aggregate", "max", "--interval", "64", "--max-length", "65536"])
        #expect(status != 0 && log.contains(db) && log.contains("read-only"), "\(log)")
        let (calibrateStatus, calibrateLog) = try Tool.run(Tool.calibrateArguments(db: dir + "/new.sqlite"))
        #expect(calibrateStatus != 0 && calibrateLog.contains("read-only"), "\(calibrateLog)")
        let (readStatus, readLog) = try Tool.run(["tables", "--db", db])
        #expect(readStatus == 0, "\(readLog)")
        #expect(Mount.remount(dir, "rw"))
        #expect(try Tool.tableHashes(db) == before)
    }
}
