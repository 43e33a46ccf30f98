// GPT-2's reversible byte ↔ printable-character map used by the ByteLevel pre-tokenizer and
// decoder: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100 and up.

enum ByteLevel {
    /// The character standing for each byte value, in the order GPT-2's `bytes_to_unicode` builds it.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt8(b))
            } else {
                table[b] = Unicode.Scalar(next)!  // 256..<324, always valid scalars
                next += 1
            }
        }
        return table
    }()

    /// Inverse map; nil for characters outside the 256 byte characters.
    static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let v = scalar.value
        if v < 256 {
            let b = Int(v)
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            return printable ? UInt8(b) : nil
        }
        if v < 256 + 68 {
            return inverseHigh[Int(v - 256)]
        }
        return nil
    }

    private static let inverseHigh: [UInt8] = {
        var out = [UInt8](repeating: 0, count: 68)
        for b in 0..<256 where byteToScalar[b].value >= 256 {
            out[Int(byteToScalar[b].value - 256)] = UInt8(b)
        }
        return out
    }()

    /// The vocabulary spelling of raw bytes (what a byte-level token string looks like).
    static func spelling(of bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(byteToScalar[Int(b)]) }
        return String(s)
    }

    /// Raw bytes of a token as the ByteLevel decoder produces them: the byte map when every
    /// character belongs to it, otherwise the token's own UTF-8 (e.g. added tokens of plain spaces).
    static func decodedBytes(ofToken token: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for scalar in token.unicodeScalars {
            guard let b = byte(for: scalar) else { return Array(token.utf8) }
            out.append(b)
        }
        return out
    }
}
