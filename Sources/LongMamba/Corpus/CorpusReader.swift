// Streaming reads of corpus files: raw bytes for .jsonl/.txt, libzstd's streaming decoder for
// .zst (it continues across concatenated frames by itself). Memory is a few fixed buffers.

import Crypto
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
    private let direct: StreamDecoder?
    private let ahead: DecodeAhead?

    private let frames: FrameParallelDecode?

    init(path: String, isZstd: Bool, hashing: Bool = false, decodeAhead: Bool = true) throws {
        self.path = path
        self.isZstd = isZstd
        // A shard of several complete frames: two threads decode alternate frames.
        if isZstd && decodeAhead, let file = try? MappedFile(path: path), let split = FrameParallelDecode.frames(of: file), split.count >= 2 {
            frames = FrameParallelDecode(path: path, file: file, frames: split, hashing: hashing)
            fileSize = Int64(file.count)
            ahead = nil
            direct = nil
            return
        }
        frames = nil
        let decoder = try StreamDecoder(path: path, isZstd: isZstd, hashing: hashing)
        fileSize = decoder.fileSize
        if isZstd && decodeAhead {
            ahead = DecodeAhead(decoder)
            direct = nil
        } else {
            ahead = nil
            direct = decoder
        }
    }

    /// File bytes consumed so far, as of the bytes handed out (compressed bytes for .zst).
    var fileBytesRead: Int64 { direct?.fileBytesRead ?? ahead?.fileBytesRead ?? frames?.fileBytesRead ?? 0 }

    /// Lowercase hex SHA-256 of the whole file, once it has been read to the end.
    func finishHash() -> String? { direct?.finishHash() ?? ahead?.finishHash() ?? frames?.finishHash() }

    /// Fills up to `count` bytes at `out`; returns 0 only at the end of the data.
    func read(into out: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let direct { return try direct.read(into: out, count: count) }
        if let frames { return try frames.read(into: out, count: count) }
        return try ahead?.read(into: out, count: count) ?? 0
    }
}

/// Multi-frame .zst shards: worker w of two decodes frames w, w + 2, … from the mapped file into
/// its own few buffers; the reader takes the chunks frame by frame, in file order, so it sees
/// the same bytes as one stream decoder. Only used when every frame parsed completely (damaged
/// files go through the stream decoder, whose errors name the offset).
final class FrameParallelDecode: @unchecked Sendable {
    fileprivate struct Chunk { let buffer: UnsafeMutableRawPointer?; let count: Int; let frameEnd: Bool; let failure: Error? }

    fileprivate final class Lane: @unchecked Sendable {
        let condition = NSCondition()
        var free: [UnsafeMutableRawPointer] = []
        var filled: [Chunk] = []
        var cancelled = false
        var done = false
    }

    private static let bufferBytes = 1 << 20
    private let path: String
    private let file: MappedFile
    private let frameRanges: [Range<Int>]
    private let lanes = [Lane(), Lane()]
    private let buffers: [UnsafeMutableRawPointer]
    /// The file's SHA-256, set by worker 1 before it decodes.
    fileprivate final class HashBox: @unchecked Sendable {
        private let lock = NSLock()
        private var value: String?
        func set(_ v: String) { lock.withLock { value = v } }
        func get() -> String? { lock.withLock { value } }
    }
    private let hashBox = HashBox()
    // Reader side only.
    private var frame = 0
    private var current: Chunk?
    private var position = 0
    private(set) var fileBytesRead: Int64 = 0

    /// The byte ranges of the file's frames, or nil unless they tile the whole file.
    static func frames(of file: MappedFile) -> [Range<Int>]? {
        guard let base = file.bytes.baseAddress else { return nil }
        file.adviseRandomAccess()          // the walk reads a 3-byte header per block: no read-ahead
        defer { file.adviseSequentialAccess() }
        var ranges: [Range<Int>] = []
        var offset = 0
        while offset < file.count {
            let size = ZSTD_findFrameCompressedSize(base + offset, file.count - offset)
            guard ZSTD_isError(size) == 0, size > 0, offset + size <= file.count else { file.release(0..<file.count); return nil }
            ranges.append(offset..<(offset + size))
            offset += size
        }
        file.release(0..<file.count)   // the walk touched block headers; keep the resident set flat
        return ranges
    }

    init(path: String, file: MappedFile, frames: [Range<Int>], hashing: Bool) {
        self.path = path; self.file = file; frameRanges = frames
        buffers = (0..<6).map { _ in UnsafeMutableRawPointer.allocate(byteCount: Self.bufferBytes, alignment: 64) }
        for (i, lane) in lanes.enumerated() { lane.free = Array(buffers[(3 * i)..<(3 * i + 3)]) }
        for w in 0..<2 {
            let lane = lanes[w], mine = stride(from: w, to: frames.count, by: 2).map { frames[$0] }
            let hashFile = hashing && w == 1 ? file : nil
            // The threads hold the lanes and the hash box, not `self`: dropping the reader early
            // cancels them (deinit) instead of leaving them blocked on full lanes.
            let box = hashBox, bytes = Self.bufferBytes
            let thread = Thread { [path] in
                if let f = hashFile {
                    var h = SHA256()
                    let step = 8 << 20
                    for start in stride(from: 0, to: f.count, by: step) {
                        let range = start..<min(f.count, start + step)
                        h.update(bufferPointer: f.slice(range))
                        f.release(range)
                    }
                    box.set(h.finalize().hexString)   // before this lane says done
                }
                FrameParallelDecode.decode(mine, of: file, path: path, into: lane, bufferBytes: bytes)
            }
            thread.name = "longmamba.decode.\(w)"
            thread.start()
        }
    }

    deinit {
        for lane in lanes {
            lane.condition.lock()
            lane.cancelled = true
            lane.condition.broadcast()
            while !lane.done { lane.condition.wait() }
            lane.condition.unlock()
        }
        for b in buffers { b.deallocate() }
    }

    private static func decode(_ frames: [Range<Int>], of file: MappedFile, path: String, into lane: Lane, bufferBytes: Int) {
        defer { lane.condition.lock(); lane.done = true; lane.condition.broadcast(); lane.condition.unlock() }
        guard let stream = ZSTD_createDStream() else {
            post(Chunk(buffer: nil, count: 0, frameEnd: false, failure: CorpusError.io(path: path, reason: "cannot create a zstd decoder")), to: lane)
            return
        }
        defer { ZSTD_freeDStream(stream) }
        guard let base = file.bytes.baseAddress else { return }
        for range in frames {
            ZSTD_initDStream(stream)
            var input = ZSTD_inBuffer(src: base + range.lowerBound, size: range.count, pos: 0)
            var remainder = 1
            while input.pos < input.size || remainder != 0 {
                lane.condition.lock()
                while lane.free.isEmpty && !lane.cancelled { lane.condition.wait() }
                if lane.cancelled { lane.condition.unlock(); return }
                let buffer = lane.free.removeLast()
                lane.condition.unlock()
                var output = ZSTD_outBuffer(dst: buffer, size: bufferBytes, pos: 0)
                let before = input.pos
                let ret = ZSTD_decompressStream(stream, &output, &input)
                if ZSTD_isError(ret) != 0 {
                    let reason = String(cString: ZSTD_getErrorName(ret))
                    post(Chunk(buffer: buffer, count: 0, frameEnd: false,
                               failure: CorpusError.corruptZstd(path: path, compressedOffset: Int64(range.lowerBound + input.pos), reason: reason)), to: lane)
                    return
                }
                remainder = ret
                let end = ret == 0 && input.pos == input.size
                if output.pos == 0 && !end && input.pos == before {
                    // No progress on a frame that findFrameCompressedSize called complete: damage.
                    post(Chunk(buffer: buffer, count: 0, frameEnd: false,
                               failure: CorpusError.truncatedZstd(path: path, compressedOffset: Int64(range.upperBound))), to: lane)
                    return
                }
                post(Chunk(buffer: buffer, count: output.pos, frameEnd: end, failure: nil), to: lane)
                if end { file.release(range); break }   // decoded: drop the frame's pages again
            }
        }
    }

    private static func post(_ chunk: Chunk, to lane: Lane) {
        lane.condition.lock(); lane.filled.append(chunk); lane.condition.broadcast(); lane.condition.unlock()
    }

    func finishHash() -> String? { hashBox.get() }

    func read(into out: UnsafeMutableRawPointer, count: Int) throws -> Int {
        while true {
            if current == nil {
                guard frame < frameRanges.count else {
                    // The hash is done by the time the last frame is (worker 1 hashes first).
                    for lane in lanes { lane.condition.lock(); while !lane.done { lane.condition.wait() }; lane.condition.unlock() }
                    return 0
                }
                let lane = lanes[frame % 2]
                lane.condition.lock()
                while lane.filled.isEmpty { lane.condition.wait() }
                current = lane.filled.removeFirst(); position = 0
                lane.condition.unlock()
                if let failure = current?.failure { throw failure }
            }
            guard let chunk = current else { continue }
            let n = min(count, chunk.count - position)
            if n > 0, let buffer = chunk.buffer { out.copyMemory(from: buffer + position, byteCount: n) }
            position += n
            if position == chunk.count {
                current = nil
                let lane = lanes[frame % 2]
                if let buffer = chunk.buffer { lane.condition.lock(); lane.free.append(buffer); lane.condition.broadcast(); lane.condition.unlock() }
                if chunk.frameEnd { fileBytesRead = Int64(frameRanges[frame].upperBound); frame += 1 }
            }
            if n > 0 { return n }
        }
    }
}

/// The producer side of `CorpusByteReader`: a thread that fills a few buffers ahead of the
/// reader. The thread holds only the shared `Exchange`, so dropping the reader early (an error
/// while parsing) cancels the thread and waits for it instead of leaving it blocked.
final class DecodeAhead: @unchecked Sendable {
    fileprivate struct Filled { let buffer: UnsafeMutableRawPointer; let count: Int; let fileBytesRead: Int64 }

    /// State shared by the reader and the decode thread, guarded by `condition`.
    fileprivate final class Exchange: @unchecked Sendable {
        let condition = NSCondition()
        var free: [UnsafeMutableRawPointer] = []
        var filled: [Filled] = []
        var finished = false
        var failure: Error?
        var cancelled = false
        var producerDone = false
        var hash: String?
    }

    private static let bufferBytes = 1 << 20
    private static let slots = 4
    private let exchange = Exchange()
    private let all: [UnsafeMutableRawPointer]
    // Reader side only.
    private var current: Filled?
    private var position = 0
    private var consumedFileBytes: Int64 = 0

    init(_ decoder: StreamDecoder) {
        all = (0..<Self.slots).map { _ in UnsafeMutableRawPointer.allocate(byteCount: Self.bufferBytes, alignment: 64) }
        exchange.free = all
        let exchange = self.exchange, bytes = Self.bufferBytes
        let thread = Thread { DecodeAhead.produce(decoder, exchange, bufferBytes: bytes) }
        thread.name = "longmamba.decode"
        thread.start()
    }

    deinit {
        let x = exchange
        x.condition.lock()
        x.cancelled = true
        x.condition.broadcast()
        while !x.producerDone { x.condition.wait() }
        x.condition.unlock()
        for b in all { b.deallocate() }
    }

    private static func produce(_ decoder: StreamDecoder, _ x: Exchange, bufferBytes: Int) {
        defer { x.condition.lock(); x.producerDone = true; x.condition.broadcast(); x.condition.unlock() }
        while true {
            x.condition.lock()
            while x.free.isEmpty && !x.cancelled { x.condition.wait() }
            if x.cancelled { x.condition.unlock(); return }
            let buffer = x.free.removeLast()
            x.condition.unlock()
            do {
                let n = try decoder.read(into: buffer, count: bufferBytes)
                x.condition.lock()
                if n == 0 {
                    x.free.append(buffer); x.finished = true; x.hash = decoder.finishHash()
                } else {
                    x.filled.append(Filled(buffer: buffer, count: n, fileBytesRead: decoder.fileBytesRead))
                }
                x.condition.broadcast()
                x.condition.unlock()
                if n == 0 { return }
            } catch {
                x.condition.lock()
                x.free.append(buffer); x.failure = error
                x.condition.broadcast()
                x.condition.unlock()
                return
            }
        }
    }

    var fileBytesRead: Int64 { consumedFileBytes }

    func finishHash() -> String? {
        exchange.condition.lock(); defer { exchange.condition.unlock() }
        return exchange.hash
    }

    func read(into out: UnsafeMutableRawPointer, count: Int) throws -> Int {
        let x = exchange
        if current == nil {
            x.condition.lock()
            while x.filled.isEmpty && !x.finished && x.failure == nil { x.condition.wait() }
            if !x.filled.isEmpty { current = x.filled.removeFirst(); position = 0 }
            let error = x.failure
            x.condition.unlock()
            // Bytes decoded before a failure are handed out first, as the plain reader would.
            guard current != nil else {
                if let error { throw error }
                return 0
            }
        }
        guard let chunk = current else { return 0 }
        let n = min(count, chunk.count - position)
        out.copyMemory(from: chunk.buffer + position, byteCount: n)
        position += n
        consumedFileBytes = chunk.fileBytesRead
        if position == chunk.count {
            current = nil
            x.condition.lock(); x.free.append(chunk.buffer); x.condition.broadcast(); x.condition.unlock()
        }
        return n
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
