// Lower-case hexadecimal of a digest: the form every hash in the store, the exports and the
// recordings' metadata takes.

extension Sequence where Element == UInt8 {
    /// "9f86d0…" (two lower-case hex digits per byte).
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(underestimatedCount * 2)
        for b in self { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xf)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
