// The GPT-2 pre-tokenization regex as a hand-written scanner:
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// Oniguruma (what Hugging Face tokenizers uses) tries the alternatives in order at each
// position, so the scanner does the same: contractions, then an optional U+0020 followed by a
// run of one class, then whitespace. `\s+(?!\S)` keeps the last whitespace character of a run
// for the following word unless the run ends the text. `\s` is the Unicode White_Space
// property, `\p{L}`/`\p{N}` the letter/number general categories.

enum GPT2Split {
    enum CharClass: UInt8 { case letter, number, space, other }

    /// Classes of ASCII bytes, looked up instead of decoding properties.
    private static let asciiClass: [CharClass] = (0..<128).map { b -> CharClass in
        switch b {
        case 9...13, 32: return .space
        case 48...57: return .number
        case 65...90, 97...122: return .letter
        default: return .other
        }
    }

    static func classify(_ scalar: Unicode.Scalar) -> CharClass {
        if scalar.value < 128 { return asciiClass[Int(scalar.value)] }
        let p = scalar.properties
        if p.isWhitespace { return .space }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        default:
            return .other
        }
    }

    /// Class and UTF-8 length of the character starting at `i` (input is valid UTF-8).
    @inline(__always)
    static func char(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> (CharClass, Int) {
        let b0 = s[i]
        if b0 < 0x80 { return (asciiClass[Int(b0)], 1) }
        var v: UInt32
        let n: Int
        if b0 < 0xE0 {
            v = UInt32(b0 & 0x1F); n = 2
        } else if b0 < 0xF0 {
            v = UInt32(b0 & 0x0F); n = 3
        } else {
            v = UInt32(b0 & 0x07); n = 4
        }
        for k in 1..<n { v = (v << 6) | UInt32(s[i + k] & 0x3F) }
        guard let scalar = Unicode.Scalar(v) else { return (.other, n) }
        return (classify(scalar), n)
    }

    /// Calls `body` with the byte range of each piece, in order; the pieces cover the input.
    static func split(_ s: UnsafeBufferPointer<UInt8>, _ body: (Range<Int>) -> Void) {
        let n = s.count
        var i = 0
        while i < n {
            let end = pieceEnd(s, from: i)
            body(i..<end)
            i = end
        }
    }

    /// Extends a run of characters of class `cls` from `i`.
    @inline(__always)
    private static func runEnd(_ s: UnsafeBufferPointer<UInt8>, from start: Int, _ cls: CharClass) -> Int {
        var i = start
        while i < s.count {
            let (c, len) = char(s, i)
            if c != cls { break }
            i += len
        }
        return i
    }

    static func pieceEnd(_ s: UnsafeBufferPointer<UInt8>, from i: Int) -> Int {
        let n = s.count
        let b0 = s[i]
        // 's|'t|'re|'ve|'m|'ll|'d
        if b0 == UInt8(ascii: "'"), i + 1 < n {
            let b1 = s[i + 1]
            switch b1 {
            case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"):
                return i + 2
            case UInt8(ascii: "r"), UInt8(ascii: "v"):
                if i + 2 < n, s[i + 2] == UInt8(ascii: "e") { return i + 3 }
            case UInt8(ascii: "l"):
                if i + 2 < n, s[i + 2] == UInt8(ascii: "l") { return i + 3 }
            default:
                break
            }
        }
        // ` ?X+` for X in letters, numbers, other: the optional space is U+0020 only.
        if b0 == 0x20, i + 1 < n {
            let (c1, len1) = char(s, i + 1)
            if c1 != .space { return runEnd(s, from: i + 1 + len1, c1) }
        }
        let (c0, len0) = char(s, i)
        if c0 != .space { return runEnd(s, from: i + len0, c0) }
        // \s+(?!\S) then \s+: a run that ends the text is taken whole; otherwise its last
        // character is left for the next piece, unless the run is a single character.
        var lastStart = i
        var j = i + len0
        while j < n {
            let (c, len) = char(s, j)
            if c != .space { break }
            lastStart = j
            j += len
        }
        if j == n || lastStart == i { return j }
        return lastStart
    }
}
