import Foundation
import Testing
@testable import LongMamba

@Suite struct LongMambaFilterTests {
    @Test(arguments: [("mamba-tiny-hf", "mamba-longmamba"), ("mamba2-tiny-hf", "mamba2-longmamba")])
    func filteredLogitsMatchTransformersWithTheSameRule(fixture: String, golden goldenName: String) throws {
        let golden = try ModelFixtures.goldenFile(goldenName)
        let tokens = try golden.integers("tokens")
        let theta = try golden.floats("theta")[0]
        let model = try MambaModel(directory: ModelFixtures.model(fixture))
        let layers = model.config.layerCount
        let filter = try LongMambaFilter(
            deltaThresholds: try (0..<layers).map { try golden.floats("layer.\($0).threshold") },
            cumulativeDecays: try (0..<layers).map { try golden.floats("layer.\($0).cumulative_decay") },
            theta: Double(theta))
        try filter.validate(for: model.config)
        for reference in [false, true] {
            model.useReferenceScan = reference
            let run = LongMambaFilterRun(filter: filter)
            var none = DiscardingRecorder()
            let logits = try model.forward(tokens: tokens, recorder: &none, computeLogits: true, deltaFilter: run.deltaFilter)
            #expect(relativeError(logits, try golden.floats("logits")) <= 1e-4)
            // The filter must matter: vanilla logits are far from the filtered ones.
            #expect(relativeError(try golden.floats("vanilla_logits"), try golden.floats("logits")) > 1e-3)
            for l in 0..<layers { #expect(Float(run.kept[l]) == (try golden.floats("layer.\(l).kept")[0])) }
            #expect(run.keptShare > 0 && run.keptShare < 1)
        }
    }

    @Test func keepsOnlyDeltaStrictlyAboveTheThresholdInGlobalChannels() throws {
        let filter = try LongMambaFilter(deltaThresholds: [[0.5, 0.5]], cumulativeDecays: [[0.9, 0.01]], theta: 0.05)
        var delta: [Float] = [0.5, 0.1,   // t0: global c0 at τ exactly → dropped; local c1 kept
                              0.6, 0.7]   // t1: global c0 above τ → kept
        let kept = filter.apply(layer: 0, delta: &delta, length: 2, channels: 2)
        #expect(delta == [0, 0.1, 0.6, 0.7])
        #expect(kept == 1)
        #expect(filter.globalChannelCounts == [1])
    }

    @Test func refusesNonPositiveThetaAndMismatchedTables() throws {
        let theta = #expect(throws: LongMambaFilterError.self) { try LongMambaFilter(deltaThresholds: [[1]], cumulativeDecays: [[1]], theta: 0) }
        #expect(theta == .invalidTheta(0))
        #expect(theta?.description == "θ must be > 0, got 0.0")
        let channels = #expect(throws: LongMambaFilterError.self) { try LongMambaFilter(deltaThresholds: [[1, 2]], cumulativeDecays: [[1]], theta: 0.1) }
        #expect(channels == .channelCountMismatch(layer: 0, thresholds: 2, decays: 1))
        #expect(channels?.description == "layer 0: 2 thresholds but 1 cumulative decays")
        let layers = #expect(throws: LongMambaFilterError.self) { try LongMambaFilter(deltaThresholds: [[1], [1]], cumulativeDecays: [[1]], theta: 0.1) }
        #expect(layers == .layerCountMismatch(thresholdLayers: 2, decayLayers: 1))
        #expect(layers?.description == "2 layers of thresholds but 1 of cumulative decays")
        let model = try MambaModel(directory: ModelFixtures.model("mamba2-tiny-hf"))
        let wrong = try LongMambaFilter(deltaThresholds: [[1]], cumulativeDecays: [[1]], theta: 0.1)
        let mismatch = #expect(throws: LongMambaFilterError.self) { try wrong.validate(for: model.config) }
        #expect(mismatch == .modelLayerMismatch(tableLayers: 1, modelLayers: model.config.layerCount))
        #expect(mismatch?.description == "table has 1 layers, the model \(model.config.layerCount)")
    }
}
