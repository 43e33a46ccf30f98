import Dispatch
import Foundation

// Helpers for the parallel kernels. Workers get raw pointers (as `nonisolated(unsafe)` locals),
// read shared inputs and write disjoint parts of the output, so no synchronisation is needed.

/// Buffers reused from layer to layer: big intermediates ([L, 2·d_inner] and the like) would
/// otherwise be fresh allocations whose page faults cost as much as a small matrix product.
/// `take` hands out an array of exactly `count` elements (moved out, so it is uniquely referenced
/// and never copied) whose contents are unspecified: every user overwrites it; `give` returns it
/// for the next layer.
final class Workspace {
    private var slots: [Int: [Float]] = [:]

    func take(_ slot: Int, count: Int) -> [Float] {
        guard var a = slots.removeValue(forKey: slot) else { return [Float](repeating: 0, count: count) }
        if a.count == count { return a }   // every user overwrites all of it: no need to zero again
        a.removeAll(keepingCapacity: true)
        a.append(contentsOf: repeatElement(0, count: count))
        return a
    }

    func give(_ slot: Int, _ array: [Float]) { slots[slot] = array }
}

/// Runs `body` on disjoint slices of 0..<count, one per core (the element-wise steps between the
/// matrix products would otherwise leave a core idle). Small counts run inline.
func parallelRanges(_ count: Int, minimumPerPart: Int = 16, _ body: @Sendable (Range<Int>) -> Void) {
    let parts = min(ProcessInfo.processInfo.activeProcessorCount, max(1, count / minimumPerPart))
    if parts <= 1 { body(0..<count); return }
    DispatchQueue.concurrentPerform(iterations: parts) { p in
        body((count * p / parts)..<(count * (p + 1) / parts))
    }
}
