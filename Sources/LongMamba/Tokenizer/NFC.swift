/// Unicode NFC for the tokenizer's normalizer, by the Swift standard library's own normalizer
/// (`String._nfcCodeUnits`, the one String comparison uses). Checked against HF's NFC on every
/// code point it changes and on random text (Fixtures/tokenizer/nfc-golden.json and the fuzz
/// cases of the tokenizer goldens).
///
/// Foundation's `precomposedStringWithCanonicalMapping` is NOT used: on Linux it composes a
/// supplementary-plane character with following marks as if it were the BMP character with
/// the same low 16 bits (U+10052 U+0311 → U+0212), gets the Hangul jamo ranges wrong
/// (U+1105 U+1176 → U+B9C8) and leaves U+0CCA U+0CD5 uncomposed.
///
/// One known difference remains: HF's normalization tables predate Unicode 13, so HF does not
/// compose U+11935 U+11930 into U+11938 (Dives Akuru); the standard library does.
enum NFC {
    /// Scalars below U+0300 are NFC-stable and never compose with what precedes them, so text
    /// without a UTF-8 byte ≥ 0xCC (the lead byte of U+0300) is already NFC.
    @inline(__always)
    static func mayChange(_ utf8: UnsafeBufferPointer<UInt8>) -> Bool {
        utf8.contains { $0 >= 0xCC }
    }

    /// Sequences HF's NFC leaves alone but the standard library composes.
    static let knownDifferences: [[Unicode.Scalar]] = [["\u{11935}", "\u{11930}"]]

    /// NFC of valid UTF-8, as UTF-8.
    static func normalize(utf8: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        guard mayChange(utf8) else { return Array(utf8) }
        return String(decoding: utf8, as: UTF8.self)._nfcCodeUnits
    }

    static func normalize(_ text: String) -> String {
        var copy = text
        let needed = copy.withUTF8 { mayChange($0) }
        return needed ? String(decoding: text._nfcCodeUnits, as: UTF8.self) : text
    }
}
