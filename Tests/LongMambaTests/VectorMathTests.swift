import Foundation
import Testing
@testable import LongMamba

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
}
