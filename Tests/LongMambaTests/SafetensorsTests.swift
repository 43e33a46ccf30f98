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
        #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: path) }
        do { _ = try SafetensorsFile(path: path) } catch {
            #expect("\(error)".contains("'a'"))
            #expect("\(error)".contains("past the end"))
        }
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
        #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: unknown) }
        let mismatch = try file(#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, dataBytes: 8)
        #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: mismatch) }
        let overlap = try file(#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, dataBytes: 12)
        #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: overlap) }
        let notJSON = try file("{not json", dataBytes: 0)
        #expect(throws: SafetensorsError.self) { try SafetensorsFile(path: notJSON) }
    }

    @Test func convertsHalfAndBFloat16Exactly() {
        #expect(HalfConversion.bf16ToFloat(0x3f80) == 1.0)
        #expect(HalfConversion.f16ToFloat(0x3c00) == 1.0)
        #expect(HalfConversion.f16ToFloat(0xc000) == -2.0)
        #expect(HalfConversion.floatToBF16(1.0) == 0x3f80)
    }
}
