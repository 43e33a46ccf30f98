// A read-only memory mapping of a whole file.
//
// Checkpoints are mapped, never read into memory wholesale: a 7B bf16 checkpoint stays on disk
// and pages in as layers are converted one at a time.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Errors from opening or mapping a file; `reason` is the system's message (strerror).
public enum FileAccessError: Error, CustomStringConvertible, Sendable, Equatable {
    case cannotOpen(path: String, reason: String)
    case cannotStat(path: String, reason: String)
    case isDirectory(path: String)
    case cannotMap(path: String, bytes: Int, reason: String)

    public var path: String {
        switch self {
        case let .cannotOpen(path, _), let .cannotStat(path, _), let .isDirectory(path), let .cannotMap(path, _, _): return path
        }
    }

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "\(path): cannot open (\(reason))"
        case let .cannotStat(path, reason): return "\(path): cannot stat (\(reason))"
        case let .isDirectory(path): return "\(path): is a directory, expected a file"
        case let .cannotMap(path, bytes, reason): return "\(path): cannot map \(bytes) bytes (\(reason))"
        }
    }
}

/// A read-only mapping of a file. The bytes stay valid for the lifetime of the object.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let count: Int
    private let base: UnsafeRawPointer?

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw FileAccessError.cannotOpen(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw FileAccessError.cannotStat(path: path, reason: String(cString: strerror(errno)))
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw FileAccessError.isDirectory(path: path)
        }
        count = Int(st.st_size)
        if count == 0 {
            base = nil
        } else {
            let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
            guard let p, p != MAP_FAILED else {
                throw FileAccessError.cannotMap(path: path, bytes: count, reason: String(cString: strerror(errno)))
            }
            base = UnsafeRawPointer(p)
        }
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }

    /// All bytes of the file.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Drops the whole pages inside `range` from this process's resident set (MADV_DONTNEED on a
    /// read-only private mapping: the next read pages the file in again, unchanged).
    public func release(_ range: Range<Int>) {
        guard let base, range.lowerBound >= 0, range.upperBound <= count else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound + page - 1) / page * page, end = range.upperBound / page * page
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, Int32(MADV_DONTNEED))
    }

    /// MADV_RANDOM: page in only the pages touched (no read-ahead), for walks over headers.
    public func adviseRandomAccess() {
        guard let base else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base), count, Int32(MADV_RANDOM))
    }

    /// MADV_SEQUENTIAL: read ahead aggressively (streaming a range once).
    public func adviseSequentialAccess() {
        guard let base else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base), count, Int32(MADV_SEQUENTIAL))
    }

    /// A sub-range of the file; the caller has checked the bounds.
    public func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }
}
