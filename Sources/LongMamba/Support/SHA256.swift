// SHA-256, the hash of every identity in the toolkit (model fingerprints, tokenizer and corpus
// hashes, calibration keys, content hashes of recordings and tables), from the system's
// libcrypto. It replaced swift-crypto, whose vendored BoringSSL was most of a first build's
// steps (issue "Speed on the CPUs users have", item 4). The interface is the part of
// swift-crypto's that the toolkit used: a value type (copies hash independently), `update`,
// `finalize`, and the one-shot `hash(data:)`.
import COpenSSL
import Foundation

public struct SHA256: Sendable {
    /// OpenSSL's context is a plain C struct: copying the value copies the running state.
    private var context = SHA256_CTX()

    public init() { SHA256_Init(&context) }

    public mutating func update(bufferPointer: UnsafeRawBufferPointer) {
        guard let base = bufferPointer.baseAddress, bufferPointer.count > 0 else { return }
        SHA256_Update(&context, base, bufferPointer.count)
    }

    public mutating func update<D: DataProtocol>(data: D) {
        for region in data.regions { region.withUnsafeBytes { update(bufferPointer: $0) } }
    }

    /// The 32-byte digest of everything fed so far (the hasher itself is left as it was).
    public func finalize() -> [UInt8] {
        var copy = context
        var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        _ = digest.withUnsafeMutableBufferPointer { SHA256_Final($0.baseAddress!, &copy) }
        return digest
    }

    public static func hash<D: DataProtocol>(data: D) -> [UInt8] {
        var h = SHA256()
        h.update(data: data)
        return h.finalize()
    }
}
