import Foundation

/// Unicode NFC as the tokenizer's normalizer, through Foundation, checked against HF's NFC on
/// every code point it changes (Fixtures/tokenizer/nfc-golden.json). Known differences:
/// - Foundation leaves U+0CCA U+0CD5 (Kannada vowel sign O + length mark) uncomposed; NFC and
///   HF give U+0CCB. Patched below.
/// - HF's normalization tables predate Unicode 13, so it does not compose U+11935 U+11930 into
///   U+11938 (Dives Akuru); Foundation does. Not patched: the script is rare and new.
enum NFC {
    /// Scalars below U+0300 are NFC-stable and never compose with what precedes them, so text
    /// without a UTF-8 byte ≥ 0xCC (the lead byte of U+0300) is already NFC.
    @inline(__always)
    static func mayChange(_ utf8: UnsafeBufferPointer<UInt8>) -> Bool {
        utf8.contains { $0 >= 0xCC }
    }

    /// Characters HF's NFC treats differently from what Foundation would give.
    static let knownDifferences: [[Unicode.Scalar]] = [["\u{11935}", "\u{11930}"]]

    static func normalize(_ text: String) -> String {
        var copy = text
        let needed = copy.withUTF8 { mayChange($0) }
        guard needed else { return text }
        let nfc = text.precomposedStringWithCanonicalMapping
        // Both are starters, so adjacent they always compose, and U+0CCB composes no further.
        guard nfc.unicodeScalars.contains("\u{0CCA}") else { return nfc }
        var out = String.UnicodeScalarView()
        var pendingO = false
        for s in nfc.unicodeScalars {
            if pendingO {
                pendingO = false
                if s == "\u{0CD5}" { out.append("\u{0CCB}"); continue }
                out.append("\u{0CCA}")
            }
            if s == "\u{0CCA}" { pendingO = true } else { out.append(s) }
        }
        if pendingO { out.append("\u{0CCA}") }
        return String(out)
    }
}
