import Foundation
import Testing
@testable import LongMamba

@Suite struct LookupTests {
    @Test func roundsToTheNearestLengthAndHalfwayToTheShorter() {
        let grid = [1000, 2000, 3000]
        func nearest(_ s: Int) -> Int? { LengthRounding.nearestIndex(of: s, in: grid).map { grid[$0] } }
        #expect(nearest(1) == 1000)
        #expect(nearest(1000) == 1000)
        #expect(nearest(1499) == 1000)
        #expect(nearest(1500) == 1000)  // halfway → shorter, as the authors' loader
        #expect(nearest(1501) == 2000)
        #expect(nearest(2499) == 2000)
        #expect(nearest(2500) == 2000)
        #expect(nearest(2501) == 3000)
        #expect(nearest(3000) == 3000)
        #expect(nearest(1_000_000) == 3000)
        #expect(LengthRounding.nearestIndex(of: 5, in: []) == nil)
    }

    @Test func lookupReturnsTheRowOfTheNearestLengthAndTheStrictGlobalMask() throws {
        let dir = SyntheticRecordings.tempDir()
        let store = try CalibrationStore(path: "\(dir)/cal.sqlite")
        let run = try store.importRecordings(try SyntheticRecordings.write(in: dir, samples: 2, layers: 2, L: 200, C: 6))
        let id = try TableService(store: store).solve(run: run, clampFraction: 0.1, aggregation: .mean, interval: 1000, maxLength: 10_000)
        let l1 = try store.tableLayer(table: id, layer: 1)
        let r = try TableLookup(store: store).lookup(table: id, length: 4500, layer: 1, theta: 0.05)
        // 4500 is halfway between 4000 and 5000: the shorter row (index 3), as the authors' loader.
        #expect(r.length == 4000 && r.requestedLength == 4500 && !r.beyondLastLength)
        #expect(r.layers.count == 1 && r.layers[0].layer == 1)
        #expect(r.layers[0].deltaThreshold == Array(l1.deltaThreshold[(3 * 6)..<(4 * 6)]))
        #expect(r.layers[0].keptFraction == Array(l1.keptFraction[(3 * 6)..<(4 * 6)]))
        let past = try TableLookup(store: store).lookup(table: id, length: 4501, layer: 1, theta: 0.05)
        #expect(past.length == 5000)
        #expect(past.layers[0].keptFraction == Array(l1.keptFraction[(4 * 6)..<(5 * 6)]))
        // θ equal to a channel's decay: not global (a_c > θ is strict).
        let a = l1.cumulativeDecay[2]
        let atTheta = try TableLookup(store: store).lookup(table: id, length: 4500, layer: 1, theta: Double(a))
        #expect(atTheta.layers[0].globalChannel[2] == false)
        let below = try TableLookup(store: store).lookup(table: id, length: 4500, layer: 1, theta: Double(a.nextDown))
        #expect(below.layers[0].globalChannel[2] == true)
        #expect(below.layers[0].globalChannelCount == l1.cumulativeDecay.filter { $0 > a.nextDown }.count)
        let all = try TableLookup(store: store).lookup(table: id, length: 20_000)
        #expect(all.length == 10_000 && all.beyondLastLength && all.layers.count == 2 && all.theta == GlobalChannels.defaultTheta)
        let json = try all.json()
        #expect(json.contains("\"global_channel\"") && json.contains("\"length\":10000"))
        #expect(throws: LookupError.noSuchLayer(path: "\(dir)/cal.sqlite", table: id, layer: 2, layerCount: 2)) { try TableLookup(store: store).lookup(table: id, length: 4000, layer: 2) }
        #expect(throws: StoreError.unknownTable(path: "\(dir)/cal.sqlite", id: 99)) { try TableLookup(store: store).lookup(table: 99, length: 4000) }
    }
}
