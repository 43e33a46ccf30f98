import Foundation

/// Every document of a file, decoded: for tools and tests that need all of them (the sampler
/// decodes only the documents it may keep).
public enum CorpusDocuments {
    /// Calls `body(text, lineNumber)` per document until it returns false. Bad lines throw.
    public static func forEach(_ file: CorpusFile, maxLineBytes: Int = 256 << 20,
                               _ body: (String, Int) throws -> Bool) throws {
        if file.format == .text {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: file.path)) } catch {
                throw CorpusError.io(path: file.path, reason: "cannot read (\(error.localizedDescription))")
            }
            if let bad = [UInt8](data).withUnsafeBufferPointer(UTF8Check.firstInvalidOffset) {
                throw CorpusError.invalidUTF8(path: file.path, line: 1, byteOffset: Int64(bad))
            }
            _ = try body(String(decoding: data, as: UTF8.self), 1)
            return
        }
        struct Stop: Error {}
        let reader = try CorpusByteReader(path: file.path, isZstd: file.format == .jsonlZstd)
        do {
            try LineSplitter(maxLineBytes: maxLineBytes).forEachLine(
                reader, chunkRead: {},
                tooLong: { line, offset in
                    throw CorpusError.lineTooLong(path: file.path, line: line, byteOffset: offset, limit: maxLineBytes)
                },
                { raw, number, offset in
                    let content = PileLine.trimmedRange(raw)
                    let line = UnsafeBufferPointer(rebasing: raw[content])
                    if line.isEmpty { return }
                    do {
                        let doc = try PileLine.decode(line)
                        if try !body(doc.text, number) { throw Stop() }
                    } catch let failure as PileLine.DecodeFailure {
                        switch failure {
                        case .invalidUTF8(let at):
                            throw CorpusError.invalidUTF8(path: file.path, line: number, byteOffset: offset + Int64(content.lowerBound + at))
                        case .malformed(let reason):
                            throw CorpusError.malformedLine(path: file.path, line: number, byteOffset: offset, reason: reason)
                        case .missingText:
                            throw CorpusError.missingText(path: file.path, line: number, byteOffset: offset)
                        }
                    }
                })
        } catch is Stop {
            return
        }
    }
}
