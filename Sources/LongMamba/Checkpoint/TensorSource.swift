// A file that holds named tensors as byte ranges of a mapped file: safetensors or a PyTorch
// zip checkpoint. The model loader asks only this protocol, so both formats load the same way.

/// Named tensors backed by a memory mapping.
public protocol TensorSource: Sendable {
    /// File the tensors come from (for error messages).
    var path: String { get }
    /// Every tensor in the file.
    var tensors: [TensorInfo] { get }
    /// Raw little-endian, row-major, contiguous bytes of one tensor (a view into the mapping).
    func bytes(of info: TensorInfo) -> UnsafeRawBufferPointer
    /// Drops the tensor's mapped pages from the process (a later read pages them in again).
    func release(_ info: TensorInfo)
}

extension SafetensorsFile: TensorSource {
    public func release(_ info: TensorInfo) { file.release(info.byteRange) }
}
