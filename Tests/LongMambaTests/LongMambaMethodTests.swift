import Foundation
import Testing
@testable import LongMamba

/// The authors' whole-prompt modes (LongMambaMethods.swift) on hand-made channels, where the
/// right answer can be read off, and the refusal of a prompt in pieces.
@Suite struct LongMambaMethodTests {
    @Test func alphaKeepsTheCeilingOfAlphaTimesSTokensWithTheLargestDelta() {
        var v: [Float] = [0.1, 0.5, 0.3, 0.5, 0.2]        // ranks: t1, t3 (tie: earlier first), t2, t4, t0
        let kept = WholePromptRule.apply(.alpha, to: &v, threshold: 0, keptFraction: 0.5, decayBudget: 0)
        #expect(kept == 3 && v == [0, 0.5, 0.3, 0.5, 0])   // k = 2.5 → ranks 0, 1, 2
        var all: [Float] = [0.1, 0.2]
        #expect(WholePromptRule.apply(.alpha, to: &all, threshold: 0, keptFraction: 1, decayBudget: 0) == 2)
        var none: [Float] = [0.1, 0.2]
        #expect(WholePromptRule.apply(.alpha, to: &none, threshold: 0, keptFraction: 0, decayBudget: 0) == 0 && none == [0, 0])
        var ties: [Float] = [0.4, 0.4, 0.4]
        _ = WholePromptRule.apply(.alpha, to: &ties, threshold: 0, keptFraction: 0.3, decayBudget: 0)
        #expect(ties == [0.4, 0, 0])                        // equal Δ: the earlier token wins
    }

    @Test func boundKeepsTheLargestDeltaWhileTheirSumStaysWithinTheBudget() {
        var v: [Float] = [0.1, 0.5, 0.3, 0.2]              // sorted 0.5, 0.3, 0.2, 0.1 → sums 0.5, 0.8, 1.0, 1.1
        #expect(WholePromptRule.apply(.bound, to: &v, threshold: 0, keptFraction: 0, decayBudget: 0.8) == 2)
        #expect(v == [0, 0.5, 0.3, 0])
        var small: [Float] = [0.1, 0.5]
        #expect(WholePromptRule.apply(.bound, to: &small, threshold: 0, keptFraction: 0, decayBudget: 0.4) == 0 && small == [0, 0])
    }

    @Test func normRescalesTheChannelSoItsDeltaSumsToTheBudget() {
        var v: [Float] = [0.1, 0.3, 0.6]
        #expect(WholePromptRule.apply(.norm, to: &v, threshold: 0, keptFraction: 0, decayBudget: 2) == 3)
        #expect(abs(v.reduce(0, +) - 2) < 1e-6 && abs(v[1] / v[0] - 3) < 1e-5)
        var zero: [Float] = [0, 0]
        _ = WholePromptRule.apply(.norm, to: &zero, threshold: 0, keptFraction: 0, decayBudget: 2)
        #expect(zero == [0, 0])                             // not NaN
    }

    @Test func channelwiseTopKKeepsDeltaAboveTheLinearQuantile() {
        // S = 2500, k = 2000: q = 0.2, threshold between the 500th and 501st smallest (linear).
        var v = (0..<2500).map { Float($0) }
        let threshold = WholePromptRule.topKThreshold(v)
        #expect(abs(threshold - 0.2 * 2499) < 1e-3)
        #expect(WholePromptRule.apply(.channelwiseTopK, to: &v, threshold: 0, keptFraction: 0, decayBudget: 0) == 2500 - 500)
        // S ≤ 2000: k = S, the 0-quantile is the minimum, and Δ > min drops the minimum only.
        var short: [Float] = [0.3, 0.1, 0.2]
        #expect(WholePromptRule.apply(.channelwiseTopK, to: &short, threshold: 0, keptFraction: 0, decayBudget: 0) == 2)
        #expect(short == [0.3, 0, 0.2])
    }

    @Test func dtThreThroughTheRuleIsTheFilterPerToken() {
        var v: [Float] = [0.5, 0.6, 0.4]
        #expect(WholePromptRule.apply(.dtThre, to: &v, threshold: 0.5, keptFraction: 0, decayBudget: 0) == 1 && v == [0, 0.6, 0])
    }

    @Test func aWholePromptMethodSeesChannelsAcrossTokensAndOnlyGlobalOnes() {
        // Δ [L = 3, C = 2]: channel 0 global, channel 1 local.
        var filter = LongMambaFilter(layers: [.init(deltaThreshold: [0, 0], globalChannel: [true, false], keptFraction: [0.34, 0.34], decayBudget: [1, 1])],
                                     method: .alpha)
        var delta: [Float] = [0.2, 9, 0.9, 9, 0.1, 9]
        #expect(filter.apply(layer: 0, delta: &delta, length: 3, channels: 2) == 2)   // ⌈0.34 · 3⌉ = 2
        #expect(delta == [0.2, 9, 0.9, 9, 0, 9])
        filter.method = .dtThre
        #expect(!filter.method.needsWholePrompt && LongMambaMethod.allCases.filter(\.needsWholePrompt).count == 4)
    }

    @Test func aPromptInPiecesIsNoticedForWholePromptMethodsOnly() throws {
        let model = try MambaModel(directory: ModelFixtures.model("mamba2-tiny-hf"))
        let C = model.config.channelCount, layers = model.config.layerCount
        let layer = LongMambaFilter.Layer(deltaThreshold: [Float](repeating: 0.01, count: C), globalChannel: [Bool](repeating: true, count: C),
                                          keptFraction: [Float](repeating: 0.5, count: C), decayBudget: [Float](repeating: 1, count: C))
        for method in LongMambaMethod.allCases {
            let run = LongMambaFilterRun(filter: LongMambaFilter(layers: [LongMambaFilter.Layer](repeating: layer, count: layers), method: method))
            var state = SequenceState(layerCount: layers)
            var none = DiscardingRecorder()
            _ = try model.forward(tokens: [1, 2, 3, 4], continuing: &state, recorder: &none, deltaFilter: run.deltaFilter)
            #expect(!run.piecewise)
            _ = try model.forward(tokens: [5, 6], continuing: &state, recorder: &none, deltaFilter: run.deltaFilter)
            #expect(run.piecewise == method.needsWholePrompt)
        }
        #expect(EvaluationError.wholePromptInPieces(method: "alpha").description.contains("must be processed in one piece"))
    }
}

/// The authors' own mode functions, run on CPU by scripts/make_modes_golden.py on fixed Δ
/// (Fixtures/golden/longmamba-modes.safetensors): ours equal theirs bit for bit where the golden
/// says so (no ties; norm's sum order is torch's and matches to float rounding), and on ties keep
/// the same number of tokens with the same values.
@Suite struct LongMambaModesGoldenTests {
    @Test(arguments: ["L3000", "L2100", "L1500"])
    func everyModeEqualsTheAuthorsCode(length: String) throws {
        let golden = try ModelFixtures.goldenFile("longmamba-modes")
        let exact = Set((golden.metadata["exact"] ?? "").split(separator: ",").map(String.init))
        #expect(!exact.isEmpty)
        let theta = Double(try golden.floats("\(length).theta")[0])
        let a = try golden.floats("\(length).cumulative_decay"), tau = try golden.floats("\(length).delta_threshold")
        let alpha = try golden.floats("\(length).kept_fraction"), budget = try golden.floats("\(length).decay_budget")
        let global = GlobalChannels.mask(cumulativeDecay: a, theta: theta)
        for variant in ["distinct", "ties"] {
            let input = try golden.floats("\(length)-\(variant).dt")             // [1, H, L]
            let H = a.count, L = input.count / H
            for method in LongMambaMethod.allCases {
                let theirs = try golden.floats("\(length)-\(variant).\(method.rawValue)")
                var ours = input
                for c in 0..<H where global[c] {
                    var channel = Array(input[(c * L)..<((c + 1) * L)])
                    _ = WholePromptRule.apply(method, to: &channel, threshold: tau[c], keptFraction: alpha[c], decayBudget: budget[c])
                    ours.replaceSubrange((c * L)..<((c + 1) * L), with: channel)
                }
                let name = "\(length)-\(variant).\(method.rawValue)"
                if exact.contains(name) {
                    #expect(ours == theirs, "\(name)")
                } else if method == .norm {
                    #expect(relativeError(ours, theirs) < 1e-6, "\(name)")
                } else {
                    // Ties at the cut: the same count kept and the same multiset of values per channel.
                    for c in 0..<H {
                        let o = ours[(c * L)..<((c + 1) * L)], t = theirs[(c * L)..<((c + 1) * L)]
                        #expect(o.filter { $0 != 0 }.count == t.filter { $0 != 0 }.count && o.sorted() == t.sorted(), "\(name) channel \(c)")
                    }
                }
            }
        }
    }
}
