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

/// Errors from opening or mapping a file.
public struct FileAccessError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
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
            throw FileAccessError(path: path, reason: "cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw FileAccessError(path: path, reason: "cannot stat (\(String(cString: strerror(errno))))")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw FileAccessError(path: path, reason: "is a directory, expected a file")
        }
        count = Int(st.st_size)
        if count == 0 {
            base = nil
        } else {
            let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
            guard let p, p != MAP_FAILED else {
                throw FileAccessError(path: path, reason: "cannot map \(count) bytes (\(String(cString: strerror(errno))))")
            }
            base = UnsafeRawPointer(p)
        }
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }

    /// All bytes of the file.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// A sub-range of the file; the caller has checked the bounds.
    public func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }
}
