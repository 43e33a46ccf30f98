// Streaming reads of corpus files: raw bytes for .jsonl/.txt, libzstd's streaming decoder for
// .zst (it continues across concatenated frames by itself). Memory is a few fixed buffers.

import CZstd
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the decompressed bytes of one file in chunks. For .zst files a background thread
/// decompresses ahead into a few fixed buffers while the caller splits and parses lines, so the
/// two run on two cores; the caller sees the same bytes, errors and offsets in the same order.
final class CorpusByteReader {
    let path: String
    let isZstd: Bool
    let fileSize: Int64
    /// Exactly one of these: decoding on this thread, or on decode threads.
    private let direct: StreamDecoder?
    private let threads: DecodeThreads?

    init(path: String, isZstd: Bool, hashing: Bool = false, decodeAhead: Bool = true) throws {
        self.path = path
        self.isZstd = isZstd
        // A shard of several complete frames: two threads decode alternate frames.
        if isZstd && decodeAhead, let file = try? MappedFile(path: path), let split = DecodeThreads.frames(of: file), split.count >= 2 {
            threads = DecodeThreads(frames: split, of: file, path: path, hashing: hashing)
            fileSize = Int64(file.count)
            direct = nil
            return
        }
        let decoder = try StreamDecoder(path: path, isZstd: isZstd, hashing: hashing)
        fileSize = decoder.fileSize
        threads = isZstd && decodeAhead ? DecodeThreads(stream: decoder) : nil
        direct = threads == nil ? decoder : nil
    }

    /// File bytes consumed so far, as of the bytes handed out (compressed bytes for .zst).
    var fileBytesRead: Int64 { direct?.fileBytesRead ?? threads?.fileBytesRead ?? 0 }

    /// Lowercase hex SHA-256 of the whole file, once it has been read to the end.
    func finishHash() -> String? { direct?.finishHash() ?? threads?.finishHash() }

    /// Fills up to `count` bytes at `out`; returns 0 only at the end of the data.
    func read(into out: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let direct { return try direct.read(into: out, count: count) }
        return try threads?.read(into: out, count: count) ?? 0
    }
}

/// Decoded chunks passed from one decode thread to the reader, in a few buffers of its own.
/// The buffers live as long as the lane, which both sides hold, so a reader dropped early only
/// has to cancel: the thread stops at its next wait and nothing it touches is freed under it.
final class ChunkLane: @unchecked Sendable {
    struct Chunk {
        var buffer: UnsafeMutableRawPointer?
        var count: Int
        /// The last chunk of a segment (a frame, or the whole stream).
        var end: Bool
        var failure: Error?
        /// Compressed bytes behind this chunk, for progress.
        var fileBytesRead: Int64
    }

    static let bufferBytes = 1 << 20
    private let condition = NSCondition()
    /// Buffers are allocated as the decode thread gets ahead, up to `limit`.
    private let limit: Int
    // Guarded by `condition`.
    private var owned: [UnsafeMutableRawPointer] = []
    private var free: [UnsafeMutableRawPointer] = []
    private var filled: [Chunk] = []
    private var cancelled = false

    init(buffers limit: Int) { self.limit = max(1, limit) }

    deinit { for b in owned { b.deallocate() } }

    /// Decode thread: a buffer to fill (a new one while fewer than `limit` exist), or nil once
    /// the reader is gone.
    func takeFree() -> UnsafeMutableRawPointer? {
        condition.lock(); defer { condition.unlock() }
        if free.isEmpty && owned.count < limit && !cancelled {
            let b = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferBytes, alignment: 64)
            owned.append(b)
            return b
        }
        while free.isEmpty && !cancelled { condition.wait() }
        return cancelled ? nil : free.removeLast()
    }

    func post(_ chunk: Chunk) {
        condition.lock(); filled.append(chunk); condition.broadcast(); condition.unlock()
    }

    /// Reader: the next chunk, waiting for it.
    func next() -> Chunk {
        condition.lock(); defer { condition.unlock() }
        while filled.isEmpty { condition.wait() }
        return filled.removeFirst()
    }

    func giveBack(_ buffer: UnsafeMutableRawPointer?) {
        guard let buffer else { return }
        condition.lock(); free.append(buffer); condition.broadcast(); condition.unlock()
    }

    func cancel() {
        condition.lock(); cancelled = true; condition.broadcast(); condition.unlock()
    }
}

/// The file's SHA-256, set by a decode thread before it posts the chunk that ends its data.
final class HashBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: String?
    func set(_ v: String) { lock.withLock { value = v } }
    func get() -> String? { lock.withLock { value } }
}

/// Decoding ahead of the reader on other threads; the reader sees the same bytes, errors and
/// offsets, in the same order, as one `StreamDecoder`. Segment i (a frame of a multi-frame
/// shard, or the whole stream) comes from lane i mod lanes.count.
/// - `stream:` one thread runs a `StreamDecoder` into four buffers (any file, damaged ones too).
/// - `frames:` two threads decode alternate frames of the mapped file, each up to 32 MB ahead. Only
///   for files whose frames all parse (damaged files take the stream decoder, whose errors name
///   the offset).
final class DecodeThreads {
    private let lanes: [ChunkLane]
    private let segments: Int
    private let hash = HashBox()
    // Reader side.
    private var segment = 0
    private var current: ChunkLane.Chunk?
    private var position = 0
    /// Once a segment failed, every later read throws the same (the threads have stopped).
    private var failure: Error?
    private(set) var fileBytesRead: Int64 = 0

    init(stream decoder: StreamDecoder) {
        let lane = ChunkLane(buffers: 4), hash = self.hash
        lanes = [lane]; segments = 1
        Self.start("longmamba.decode") {
            while let buffer = lane.takeFree() {
                do {
                    let n = try decoder.read(into: buffer, count: ChunkLane.bufferBytes)
                    if n == 0, let digest = decoder.finishHash() { hash.set(digest) }
                    lane.post(.init(buffer: buffer, count: n, end: n == 0, failure: nil, fileBytesRead: decoder.fileBytesRead))
                    if n == 0 { return }
                } catch {
                    lane.post(.init(buffer: buffer, count: 0, end: false, failure: error, fileBytesRead: decoder.fileBytesRead))
                    return
                }
            }
        }
    }

    init(frames: [Range<Int>], of file: MappedFile, path: String, hashing: Bool) {
        // The reader takes the frames in file order, so the worker on the next frame must hold
        // what it decodes until the reader gets there: with a few buffers it would wait for the
        // reader after a few MB of each frame, and the two threads would mostly take turns.
        // Each lane may get `framesAheadBytes` ahead (memory bounded: not a function of the file).
        let buffers = DecodeThreads.framesAheadBytes / ChunkLane.bufferBytes
        lanes = [ChunkLane(buffers: buffers), ChunkLane(buffers: buffers)]; segments = frames.count
        for w in 0..<2 {
            let lane = lanes[w], mine = stride(from: w, to: frames.count, by: 2).map { frames[$0] }
            let hash = hashing && w == 1 ? self.hash : nil
            Self.start("longmamba.decode.\(w)") {
                // Worker 1 hashes the whole file before its first frame, so the hash is set
                // before the reader can reach the end (there are at least two frames).
                if let hash {
                    var h = SHA256()
                    let step = 8 << 20
                    for start in stride(from: 0, to: file.count, by: step) {
                        let range = start..<min(file.count, start + step)
                        h.update(bufferPointer: file.slice(range))
                        file.release(range)
                    }
                    hash.set(h.finalize().hexString)
                }
                DecodeThreads.decode(mine, of: file, path: path, into: lane)
            }
        }
    }

    /// How far a frame worker may decode ahead of the reader (per lane).
    static let framesAheadBytes = 32 << 20

    deinit { for lane in lanes { lane.cancel() } }

    private static func start(_ name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = name
        thread.start()
    }

    /// The byte ranges of the file's frames, or nil unless they tile the whole file.
    static func frames(of file: MappedFile) -> [Range<Int>]? {
        guard let base = file.bytes.baseAddress else { return nil }
        file.adviseRandomAccess()          // the walk reads a 3-byte header per block: no read-ahead
        defer { file.adviseSequentialAccess(); file.release(0..<file.count) }   // keep the resident set flat
        var ranges: [Range<Int>] = []
        var offset = 0
        while offset < file.count {
            let size = ZSTD_findFrameCompressedSize(base + offset, file.count - offset)
            guard ZSTD_isError(size) == 0, size > 0, offset + size <= file.count else { return nil }
            ranges.append(offset..<(offset + size))
            offset += size
        }
        return ranges
    }

    private static func decode(_ frames: [Range<Int>], of file: MappedFile, path: String, into lane: ChunkLane) {
        func fail(_ buffer: UnsafeMutableRawPointer?, _ error: Error, at offset: Int) {
            lane.post(.init(buffer: buffer, count: 0, end: false, failure: error, fileBytesRead: Int64(offset)))
        }
        guard let stream = ZSTD_createDStream() else {
            return fail(nil, CorpusError.io(path: path, reason: "cannot create a zstd decoder"), at: 0)
        }
        defer { ZSTD_freeDStream(stream) }
        guard let base = file.bytes.baseAddress else { return }
        for range in frames {
            ZSTD_initDStream(stream)
            var input = ZSTD_inBuffer(src: base + range.lowerBound, size: range.count, pos: 0)
            while true {
                guard let buffer = lane.takeFree() else { return }   // the reader is gone
                var output = ZSTD_outBuffer(dst: buffer, size: ChunkLane.bufferBytes, pos: 0)
                let before = input.pos
                let ret = ZSTD_decompressStream(stream, &output, &input)
                if ZSTD_isError(ret) != 0 {
                    let offset = range.lowerBound + input.pos
                    return fail(buffer, CorpusError.corruptZstd(path: path, compressedOffset: Int64(offset), reason: String(cString: ZSTD_getErrorName(ret))), at: offset)
                }
                let end = ret == 0 && input.pos == input.size
                if output.pos == 0 && !end && input.pos == before {
                    // No progress on a frame that findFrameCompressedSize called complete: damage.
                    return fail(buffer, CorpusError.truncatedZstd(path: path, compressedOffset: Int64(range.upperBound)), at: range.upperBound)
                }
                lane.post(.init(buffer: buffer, count: output.pos, end: end, failure: nil, fileBytesRead: Int64(end ? range.upperBound : range.lowerBound)))
                if end { file.release(range); break }   // decoded: drop the frame's pages again
            }
        }
    }

    func finishHash() -> String? { hash.get() }

    func read(into out: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let failure { throw failure }
        while true {
            if current == nil {
                guard segment < segments else { return 0 }
                let chunk = lanes[segment % lanes.count].next()
                // Bytes decoded before a failure were handed out first, as one decoder would.
                if let error = chunk.failure { failure = error; throw error }
                current = chunk; position = 0
            }
            guard let chunk = current else { continue }
            let n = min(count, chunk.count - position)
            if n > 0, let buffer = chunk.buffer { out.copyMemory(from: buffer + position, byteCount: n) }
            position += n
            fileBytesRead = chunk.fileBytesRead
            if position == chunk.count {
                current = nil
                lanes[segment % lanes.count].giveBack(chunk.buffer)
                if chunk.end { segment += 1 }
            }
            if n > 0 { return n }
        }
    }
}

/// Decompresses (or reads) one file in chunks, on the calling thread.
/// Used by one thread at a time (the reader, or the decode-ahead thread it was handed to).
final class StreamDecoder: @unchecked Sendable {
    let path: String
    let isZstd: Bool
    private let fd: Int32
    private let inputCapacity: Int
    private let input: UnsafeMutableRawPointer
    private var inputSize = 0
    private var inputPos = 0
    private var inputFileOffset: Int64 = 0   // file offset of input[0]
    private var atEOF = false
    private var stream: OpaquePointer?
    /// libzstd's hint after the last call: 0 means the last frame was complete.
    private var frameRemainder = 0
    /// File bytes consumed so far (compressed bytes for .zst).
    private(set) var fileBytesRead: Int64 = 0
    /// SHA-256 of the file bytes read so far, when requested (the file's identity in provenance).
    private var hasher: SHA256?
    let fileSize: Int64

    init(path: String, isZstd: Bool, hashing: Bool = false) throws {
        self.path = path
        hasher = hashing ? SHA256() : nil
        self.isZstd = isZstd
        fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CorpusError.io(path: path, reason: "cannot open (\(String(cString: strerror(errno))))") }
        var st = stat()
        fstat(fd, &st)
        fileSize = Int64(st.st_size)
        inputCapacity = isZstd ? max(ZSTD_DStreamInSize(), 1 << 18) : 0
        input = UnsafeMutableRawPointer.allocate(byteCount: max(inputCapacity, 1), alignment: 16)
        if isZstd {
            stream = ZSTD_createDStream()
            guard stream != nil else {
                close(fd)
                throw CorpusError.io(path: path, reason: "cannot create a zstd decoder")
            }
            ZSTD_initDStream(stream)
        }
    }

    deinit {
        if let stream { ZSTD_freeDStream(stream) }
        input.deallocate()
        close(fd)
    }

    private func readFile(into p: UnsafeMutableRawPointer, count: Int) throws -> Int {
        while true {
            #if canImport(Glibc)
            let n = Glibc.read(fd, p, count)
            #else
            let n = Darwin.read(fd, p, count)
            #endif
            if n >= 0 {
                fileBytesRead += Int64(n)
                if n > 0 { hasher?.update(bufferPointer: UnsafeRawBufferPointer(start: p, count: n)) }
                return n
            }
            if errno == EINTR { continue }
            throw CorpusError.io(path: path, reason: "read failed at byte offset \(fileBytesRead) (\(String(cString: strerror(errno))))")
        }
    }

    /// Lowercase hex SHA-256 of the whole file, once it has been read to the end.
    func finishHash() -> String? {
        guard let hasher else { return nil }
        return hasher.finalize().hexString
    }

    /// Fills up to `count` bytes at `out`; returns 0 only at the end of the data.
    func read(into out: UnsafeMutableRawPointer, count: Int) throws -> Int {
        guard isZstd else { return try readFile(into: out, count: count) }
        while true {
            if inputPos == inputSize && !atEOF {
                inputFileOffset = fileBytesRead
                inputSize = try readFile(into: input, count: inputCapacity)
                inputPos = 0
                if inputSize == 0 { atEOF = true }
            }
            if inputPos == inputSize && atEOF {
                if frameRemainder != 0 { throw CorpusError.truncatedZstd(path: path, compressedOffset: fileBytesRead) }
                return 0
            }
            var inBuffer = ZSTD_inBuffer(src: input, size: inputSize, pos: inputPos)
            var outBuffer = ZSTD_outBuffer(dst: out, size: count, pos: 0)
            let ret = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
            inputPos = inBuffer.pos
            if ZSTD_isError(ret) != 0 {
                let reason = String(cString: ZSTD_getErrorName(ret))
                throw CorpusError.corruptZstd(path: path, compressedOffset: inputFileOffset + Int64(inputPos), reason: reason)
            }
            frameRemainder = ret
            if outBuffer.pos > 0 { return outBuffer.pos }
        }
    }
}

/// Splits a byte stream into lines without copying, except for lines that cross a chunk
/// boundary. A line longer than `maxLineBytes` is an error, or is skipped in `skipLongLines` mode.
struct LineSplitter {
    let maxLineBytes: Int
    let chunkBytes: Int

    init(maxLineBytes: Int, chunkBytes: Int = 4 << 20) {
        self.maxLineBytes = maxLineBytes
        self.chunkBytes = chunkBytes
    }

    /// Calls `body(line, lineNumber, byteOffset)` for each line (without its '\n'), or
    /// `tooLong(lineNumber, byteOffset)` for an over-long one; `chunkRead` after each read.
    func forEachLine(
        _ reader: CorpusByteReader,
        chunkRead: () throws -> Void,
        tooLong: (Int, Int64) throws -> Void,
        _ body: (UnsafeBufferPointer<UInt8>, Int, Int64) throws -> Void
    ) throws {
        var capacity = chunkBytes * 2
        var buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        defer { buffer.deallocate() }
        var filled = 0        // valid bytes in buffer
        var lineStart = 0     // start of the current (incomplete) line in buffer
        var streamOffsetOfBuffer: Int64 = 0
        var lineNumber = 1
        var discarding = false  // inside an over-long line: drop bytes until its newline

        while true {
            // Make room: move the partial line to the front, grow if it fills the buffer.
            if lineStart > 0 {
                let keep = filled - lineStart
                if keep > 0 { memmove(buffer, buffer + lineStart, keep) }
                streamOffsetOfBuffer += Int64(lineStart)
                filled = keep
                lineStart = 0
            }
            if discarding || (capacity - filled < chunkBytes && filled > maxLineBytes) {
                if !discarding {
                    try tooLong(lineNumber, streamOffsetOfBuffer)
                    discarding = true
                }
                streamOffsetOfBuffer += Int64(filled)
                filled = 0
            } else if capacity - filled < chunkBytes {
                // A long line: grow (bounded, since filled ≤ maxLineBytes here).
                let newCapacity = max(capacity * 2, filled + chunkBytes)
                let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 64)
                grown.copyMemory(from: buffer, byteCount: filled)
                buffer.deallocate()
                buffer = grown
                capacity = newCapacity
            }
            let n = try reader.read(into: buffer + filled, count: min(chunkBytes, capacity - filled))
            try chunkRead()
            if n == 0 { break }
            var scan = filled
            filled += n
            let base = buffer.assumingMemoryBound(to: UInt8.self)
            while scan < filled, let nl = memchr(base + scan, 0x0A, filled - scan) {
                let end = base.distance(to: nl.assumingMemoryBound(to: UInt8.self))
                if discarding {
                    discarding = false
                } else if end - lineStart > maxLineBytes {
                    try tooLong(lineNumber, streamOffsetOfBuffer + Int64(lineStart))
                } else {
                    try body(UnsafeBufferPointer(start: base + lineStart, count: end - lineStart),
                             lineNumber, streamOffsetOfBuffer + Int64(lineStart))
                }
                lineNumber += 1
                lineStart = end + 1
                scan = end + 1
            }
        }
        // Last line without a trailing newline.
        if filled > lineStart && !discarding {
            let base = buffer.assumingMemoryBound(to: UInt8.self)
            if filled - lineStart > maxLineBytes {
                try tooLong(lineNumber, streamOffsetOfBuffer + Int64(lineStart))
            } else {
                try body(UnsafeBufferPointer(start: base + lineStart, count: filled - lineStart),
                         lineNumber, streamOffsetOfBuffer + Int64(lineStart))
            }
        }
    }
}
