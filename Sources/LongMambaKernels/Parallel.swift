import Dispatch
import Foundation

// Helpers for the parallel kernels. Workers get raw pointers (as `nonisolated(unsafe)` locals),
// read shared inputs and write disjoint parts of the output, so no synchronisation is needed.

/// Runs `body` on disjoint slices of 0..<count, one per core (the element-wise steps between the
/// matrix products would otherwise leave a core idle). Small counts run inline.
public func parallelRanges(_ count: Int, minimumPerPart: Int = 16, _ body: @Sendable (Range<Int>) -> Void) {
    let parts = min(ProcessInfo.processInfo.activeProcessorCount, max(1, count / minimumPerPart))
    if parts <= 1 { body(0..<count); return }
    DispatchQueue.concurrentPerform(iterations: parts) { p in
        body((count * p / parts)..<(count * (p + 1) / parts))
    }
}
