import Foundation
import Testing
@testable import LongMamba
@testable import LongMambaKernels

@Suite struct VectorMathTests {
    @Test func vectorExpLogAndSoftplusMatchLibm() {
        var worstExp: Float = 0, worstSoftplus: Float = 0, worstLog: Float = 0
        var x: Float = -80
        while x < 80 {
            let v = Vec16((0..<16).map { x + Float($0) * 0.0037 })
            let args = Vec16((0..<16).map { Foundation.exp(v[$0] * 0.5) + 0.01 })
            let e = exp16(v), s = softplus16(v), l = log16(args)
            for i in 0..<16 {
                worstExp = max(worstExp, abs(e[i] - Foundation.exp(v[i])) / Foundation.exp(v[i]))
                let sp = softplus(v[i])
                worstSoftplus = max(worstSoftplus, abs(s[i] - sp) / max(sp, .leastNormalMagnitude))
                let reference = Foundation.log(args[i])
                worstLog = max(worstLog, abs(l[i] - reference) / max(abs(reference), 1e-3))
            }
            x += 0.0613
        }
        #expect(worstExp < 4e-7)
        #expect(worstSoftplus < 1e-6)
        #expect(worstLog < 1e-6)
    }

    /// Δ = clamp(softplus(dt + bias)) of both mixers: the vector helper against its plain twin, on a
    /// strided dt (Mamba-2 reads the dt columns of in_proj's output) with channel counts that leave
    /// a short last block, with and without a dt limit.
    @Test(arguments: [5, 16, 24, 48])
    func softplusDeltaMatchesItsPlainFormula(channels: Int) {
        let rows = 37, stride = channels + 11
        let dt = (0..<(rows * stride)).map { Float(($0 * 7919) % 1000) / 1000 * 50 - 25 }   // [-25, 25)
        let bias = (0..<channels).map { Float($0) * 0.1 - 1 }
        for limit in [nil, (lower: Float(0.01), upper: Float(3))] as [(lower: Float, upper: Float)?] {
            let fast = softplusDelta(dt, rows: rows, channels: channels, stride: stride, bias: bias, limit: limit)
            let plain = referenceSoftplusDelta(dt, rows: rows, channels: channels, stride: stride, bias: bias, limit: limit)
            #expect(fast.count == rows * channels)
            var worst: Float = 0
            for i in fast.indices { worst = max(worst, abs(fast[i] - plain[i]) / max(plain[i], .leastNormalMagnitude)) }
            #expect(worst < 1e-6, "channels \(channels), limit \(String(describing: limit))")
            if let limit { #expect(fast.allSatisfy { $0 >= limit.lower && $0 <= limit.upper }) }
        }
        // A broken dt path stays visible: NaN is not clamped into range.
        var broken = dt
        broken[stride + channels - 1] = .nan
        let delta = softplusDelta(broken, rows: rows, channels: channels, stride: stride, bias: bias, limit: (0, .infinity))
        #expect(delta[2 * channels - 1].isNaN)
        #expect(delta.filter(\.isNaN).count == 1)
    }
}
