/// UTF-8 validation that reports where the input goes wrong, so errors can name a byte offset.
public enum UTF8Check {
    /// Offset of the first byte of the first invalid sequence, or nil when all of `bytes` is
    /// valid UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF, nothing truncated).
    public static func firstInvalidOffset(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        let n = bytes.count
        var i = 0
        while i < n {
            // Eight ASCII bytes at a time: the common case in real text.
            while i + 8 <= n {
                let word = UnsafeRawPointer(bytes.baseAddress! + i).loadUnaligned(as: UInt64.self)
                if word & 0x8080_8080_8080_8080 != 0 { break }
                i += 8
            }
            if i >= n { break }
            let b0 = bytes[i]
            if b0 < 0x80 { i += 1; continue }
            let length: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; hi = 0x9F
            case 0xF0: length = 4; lo = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; hi = 0x8F
            default: return i
            }
            if i + length > n { return i }
            let b1 = bytes[i + 1]
            if b1 < lo || b1 > hi { return i }
            for k in 2..<length where bytes[i + k] & 0xC0 != 0x80 { return i }
            i += length
        }
        return nil
    }
}
