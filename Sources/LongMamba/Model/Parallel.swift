// Pointers handed to DispatchQueue.concurrentPerform workers. Each worker reads shared inputs
// and writes a disjoint part of the output, so no synchronisation is needed.

/// Lets concurrentPerform workers write disjoint parts of one buffer.
struct UnsafeMutablePointerBox: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    init(_ pointer: UnsafeMutablePointer<Float>) { self.pointer = pointer }
}

/// Read-only inputs shared by concurrentPerform workers.
struct SendablePointers: @unchecked Sendable {
    let p: [UnsafePointer<Float>]
    init(_ p: UnsafePointer<Float>...) { self.p = p }
}
