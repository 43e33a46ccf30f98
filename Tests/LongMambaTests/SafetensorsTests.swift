import Foundation
import Testing
@testable import LongMamba

@Suite struct SafetensorsTests {
    func tempPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("lm-st-\(UUID().uuidString)-\(name)").path
    }

    @Test func roundTripsTensorsAndMetadata() throws {
        var w = SafetensorsWriter(metadata: ["format": "pt"])
        w.add("a", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        w.add("lengths", shape: [2], int64s: [1000, 2000])
        let path = tempPath("rt.safetensors")
        try w.write(to: path)
        let f = try SafetensorsFile(path: path)
        #expect(f.metadata["format"] == "pt")
        #expect(try f.floats("a") == [1, 2, 3, 4, 5, 6])
        #expect(try f.integers("lengths") == [1000, 2000])
        #expect(f.info("a")?.shape == [2, 3])
    }

    @Test func refusesTruncatedData() throws {
        var w = SafetensorsWriter()
        w.add("a", shape: [4], floats: [1, 2, 3, 4])
        let data = try w.serialized()
        let path = tempPath("trunc.safetensors")
        try data.prefix(data.count - 3).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: path) }
        #expect(error?.path == path)
        #expect(error?.tensor == "a")
        #expect(error == .dataPastEnd(path: path, tensor: "a", begin: 0, end: 16, dataArea: 13))
        #expect(error?.description == "\(path): tensor 'a': data_offsets [0, 16) run past the end of the file (data area is 13 bytes; truncated?)")
        #expect(error.map { "\($0)".contains("tensor 'a'") && "\($0)".contains("past the end") } == true)
    }

    @Test func refusesUnknownDtypeAndShapeMismatch() throws {
        func file(_ header: String, dataBytes: Int) throws -> String {
            var h = Data(header.utf8)
            var n = UInt64(h.count).littleEndian
            var out = Data(bytes: &n, count: 8)
            out.append(h); h.removeAll()
            out.append(Data(count: dataBytes))
            let p = tempPath("bad.safetensors")
            try out.write(to: URL(fileURLWithPath: p))
            return p
        }
        let unknown = try file(#"{"x":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#, dataBytes: 2)
        let unknownError = #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: unknown) }
        #expect(unknownError?.path == unknown && unknownError?.tensor == "x")
        #expect(unknownError == .unknownDType(path: unknown, tensor: "x", dtype: "F8_E4M3"))
        #expect(unknownError?.description == "\(unknown): tensor 'x': unknown dtype 'F8_E4M3' (supported: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
        let mismatch = try file(#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, dataBytes: 8)
        let mismatchError = #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: mismatch) }
        #expect(mismatchError?.path == mismatch && mismatchError?.tensor == "x")
        #expect(mismatchError == .sizeMismatch(path: mismatch, tensor: "x", shape: [3], dtype: .f32, expectedBytes: 12, bytes: 8))
        #expect(mismatchError?.description == "\(mismatch): tensor 'x': shape [3] of F32 needs 12 bytes but data_offsets give 8")
        let overlap = try file(#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, dataBytes: 12)
        let overlapError = #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: overlap) }
        #expect(overlapError?.path == overlap && overlapError?.tensor == "y")
        #expect(overlapError == .overlap(path: overlap, tensor: "y", other: "x"))
        #expect(overlapError?.description == "\(overlap): tensor 'y': byte range overlaps tensor 'x'")
        let notJSON = try file("{not json", dataBytes: 0)
        let notJSONError = #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: notJSON) }
        #expect(notJSONError?.path == notJSON && notJSONError?.tensor == nil)
        // "{not json" is 9 bytes: the header spans bytes 8..<17.
        if case .headerNotJSON(let path, let headerEnd, let reason)? = notJSONError {
            #expect(path == notJSON && headerEnd == 17 && !reason.isEmpty)
        } else {
            Issue.record("expected .headerNotJSON, got \(String(describing: notJSONError))")
        }
        #expect(notJSONError?.description.hasPrefix("\(notJSON): header is not valid JSON (bytes 8 to 16): ") == true, "\(String(describing: notJSONError))")
    }

    @Test func convertsHalfAndBFloat16Exactly() {
        #expect(HalfConversion.bf16ToFloat(0x3f80) == 1.0)
        #expect(HalfConversion.f16ToFloat(0x3c00) == 1.0)
        #expect(HalfConversion.f16ToFloat(0xc000) == -2.0)
        #expect(HalfConversion.floatToBF16(1.0) == 0x3f80)
    }
}
