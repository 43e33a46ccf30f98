// The central directory of a STORED zip, read from a memory mapping: enough to locate the
// entries of a PyTorch checkpoint without copying them. Supports zip64 (checkpoints > 4 GB):
// the zip64 end-of-central-directory record/locator and zip64 extra fields.
//
// torch's writer sets flag bit 3 and leaves sizes in the local headers zero (a data descriptor
// follows the data), so sizes come from the central directory; local headers only give the
// data start (their name and extra field lengths, which include torch's alignment padding).

/// One stored entry: where its bytes are in the file.
struct ZipEntry: Sendable, Equatable {
    let name: String
    /// Absolute byte range of the entry's (uncompressed) data in the file.
    let dataRange: Range<Int>
    let crc32: UInt32
}

/// Why a zip could not be read; `offset` (where there is one) is the byte in the file of the
/// record at fault. `TorchCheckpointError.zip` adds the file name.
public enum ZipArchiveError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Shorter than an end-of-central-directory record.
    case tooShort(size: Int)
    /// No end-of-central-directory record in the last `searched` bytes.
    case noEndRecord(searched: Int)
    case zip64ValueOutOfRange(offset: Int, value: UInt64)
    /// The zip64 locator (at `offset`) points at `record`, where there is no zip64 record.
    case badZip64Locator(offset: Int, record: Int)
    /// The central directory [directoryOffset, +size) does not end before byte `limit`.
    case directoryOutOfBounds(offset: Int, directoryOffset: Int, size: Int, limit: Int)
    case missingDirectoryHeader(offset: Int)
    case headerPastDirectory(offset: Int, directoryEnd: Int)
    case zip64ExtraTooShort(offset: Int, entry: String)
    case encryptedEntry(offset: Int, entry: String)
    case compressedEntry(offset: Int, entry: String, method: Int)
    case sizeMismatch(offset: Int, entry: String, compressed: Int, size: Int)
    case missingLocalHeader(offset: Int, entry: String)
    /// An entry's data [dataStart, +size) runs into the central directory at `directoryOffset`.
    case dataPastDirectory(offset: Int, entry: String, dataStart: Int, size: Int, directoryOffset: Int)

    public var offset: Int? {
        switch self {
        case .tooShort, .noEndRecord:
            return nil
        case let .zip64ValueOutOfRange(o, _), let .badZip64Locator(o, _), let .directoryOutOfBounds(o, _, _, _),
             let .missingDirectoryHeader(o), let .headerPastDirectory(o, _), let .zip64ExtraTooShort(o, _),
             let .encryptedEntry(o, _), let .compressedEntry(o, _, _), let .sizeMismatch(o, _, _, _),
             let .missingLocalHeader(o, _), let .dataPastDirectory(o, _, _, _, _):
            return o
        }
    }

    /// What is wrong (without the file name and offset).
    public var description: String {
        switch self {
        case let .tooShort(size):
            return "file is \(size) bytes, too short for a zip end-of-central-directory record (truncated?)"
        case let .noEndRecord(searched):
            return "no zip end-of-central-directory record in the last \(searched) bytes (truncated file, or not a torch zip checkpoint; legacy pre-1.6 torch.save files are not supported)"
        case let .zip64ValueOutOfRange(_, value):
            return "zip64 value \(value) is out of range"
        case let .badZip64Locator(_, record):
            return "zip64 locator points at byte \(record), where there is no zip64 end-of-central-directory record"
        case let .directoryOutOfBounds(_, directoryOffset, size, limit):
            return "central directory [\(directoryOffset), +\(size)) does not fit before byte \(limit) (truncated or corrupt zip)"
        case let .missingDirectoryHeader(offset):
            return "expected a central directory header at byte \(offset) (corrupt zip)"
        case let .headerPastDirectory(offset, directoryEnd):
            return "central directory header at byte \(offset) runs past the directory end \(directoryEnd)"
        case let .zip64ExtraTooShort(_, entry):
            return "zip64 extra field of '\(entry)' is too short"
        case let .encryptedEntry(_, entry):
            return "entry '\(entry)' is encrypted"
        case let .compressedEntry(_, entry, method):
            return "entry '\(entry)' is compressed (method \(method)); torch checkpoints store entries uncompressed so they can be memory-mapped (hint: re-save with torch.save, or unzip and re-zip with `zip -0`)"
        case let .sizeMismatch(_, entry, compressed, size):
            return "stored entry '\(entry)' has compressed size \(compressed) ≠ size \(size)"
        case let .missingLocalHeader(offset, entry):
            return "entry '\(entry)': no local file header at byte \(offset)"
        case let .dataPastDirectory(_, entry, dataStart, size, directoryOffset):
            return "entry '\(entry)': data [\(dataStart), +\(size)) runs past the central directory at byte \(directoryOffset) (truncated or corrupt zip)"
        }
    }
}

struct ZipDirectory: Sendable {
    /// Entries in central-directory order.
    let entries: [ZipEntry]
    private let index: [String: Int]

    func entry(_ name: String) -> ZipEntry? { index[name].map { entries[$0] } }

    /// Parses the directory of `bytes`.
    init(bytes: UnsafeRawBufferPointer) throws(ZipArchiveError) {
        let count = bytes.count
        func u16(_ o: Int) -> Int { Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
        func u32(_ o: Int) -> Int { Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt32.self))) }
        func u64(_ o: Int) throws(ZipArchiveError) -> Int {
            let v = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt64.self))
            guard v <= UInt64(Int.max) else { throw ZipArchiveError.zip64ValueOutOfRange(offset: o, value: v) }
            return Int(v)
        }

        // End of central directory: 22 bytes + up to 65535 bytes of comment, at the very end.
        guard count >= 22 else {
            throw ZipArchiveError.tooShort(size: count)
        }
        var eocd = -1
        var p = count - 22
        let lowest = max(0, count - 22 - 0xFFFF)
        while p >= lowest {
            if u32(p) == 0x0605_4B50 && p + 22 + u16(p + 20) == count { eocd = p; break }
            p -= 1
        }
        guard eocd >= 0 else {
            throw ZipArchiveError.noEndRecord(searched: count - lowest)
        }
        var entryCount = u16(eocd + 10)
        var cdSize = u32(eocd + 12)
        var cdOffset = u32(eocd + 16)
        var cdLimit = eocd  // the directory must end before the records that describe it

        // zip64: a 20-byte locator right before the EOCD points at the zip64 EOCD record.
        if eocd >= 20 && u32(eocd - 20) == 0x0706_4B50 {
            let record = try u64(eocd - 20 + 8)
            guard record <= eocd - 20 - 56, u32(record) == 0x0606_4B50 else {
                throw ZipArchiveError.badZip64Locator(offset: eocd - 20, record: record)
            }
            entryCount = try u64(record + 32)
            cdSize = try u64(record + 40)
            cdOffset = try u64(record + 48)
            cdLimit = record
        }
        guard cdOffset <= cdLimit, cdSize <= cdLimit - cdOffset else {
            throw ZipArchiveError.directoryOutOfBounds(offset: eocd, directoryOffset: cdOffset, size: cdSize, limit: cdLimit)
        }

        var entries: [ZipEntry] = []
        var index: [String: Int] = [:]
        entries.reserveCapacity(min(entryCount, cdSize / 46))
        p = cdOffset
        let cdEnd = cdOffset + cdSize
        for _ in 0..<entryCount {
            guard p + 46 <= cdEnd, u32(p) == 0x0201_4B50 else {
                throw ZipArchiveError.missingDirectoryHeader(offset: p)
            }
            let flags = u16(p + 8)
            let method = u16(p + 10)
            let crc = UInt32(u32(p + 16))
            var compressed = u32(p + 20)
            var size = u32(p + 24)
            let nameLength = u16(p + 28), extraLength = u16(p + 30), commentLength = u16(p + 32)
            var localOffset = u32(p + 42)
            let headerEnd = p + 46 + nameLength + extraLength + commentLength
            guard headerEnd <= cdEnd else {
                throw ZipArchiveError.headerPastDirectory(offset: p, directoryEnd: cdEnd)
            }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(p + 46)..<(p + 46 + nameLength)]), as: UTF8.self)

            // zip64 extra field (id 1): 8-byte values for the fields that hold 0xFFFFFFFF, in order.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = u16(e), length = u16(e + 2)
                guard e + 4 + length <= extraEnd else { break }
                if id == 0x0001 {
                    var q = e + 4
                    func next() throws(ZipArchiveError) -> Int {
                        guard q + 8 <= e + 4 + length else {
                            throw ZipArchiveError.zip64ExtraTooShort(offset: e, entry: name)
                        }
                        defer { q += 8 }
                        return try u64(q)
                    }
                    if size == 0xFFFF_FFFF { size = try next() }
                    if compressed == 0xFFFF_FFFF { compressed = try next() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try next() }
                }
                e += 4 + length
            }

            guard flags & 1 == 0 else {
                throw ZipArchiveError.encryptedEntry(offset: p, entry: name)
            }
            guard method == 0 else {
                throw ZipArchiveError.compressedEntry(offset: p, entry: name, method: method)
            }
            guard compressed == size else {
                throw ZipArchiveError.sizeMismatch(offset: p, entry: name, compressed: compressed, size: size)
            }
            // Local header: 30 bytes + name + extra; its own sizes may be zero (data descriptor).
            guard localOffset <= cdOffset - 30, u32(localOffset) == 0x0403_4B50 else {
                throw ZipArchiveError.missingLocalHeader(offset: localOffset, entry: name)
            }
            let dataStart = localOffset + 30 + u16(localOffset + 26) + u16(localOffset + 28)
            guard dataStart <= cdOffset, size <= cdOffset - dataStart else {
                throw ZipArchiveError.dataPastDirectory(offset: localOffset, entry: name, dataStart: dataStart, size: size, directoryOffset: cdOffset)
            }
            if index[name] == nil { index[name] = entries.count }
            entries.append(ZipEntry(name: name, dataRange: dataStart..<(dataStart + size), crc32: crc))
            p = headerEnd
        }
        self.entries = entries
        self.index = index
    }
}
