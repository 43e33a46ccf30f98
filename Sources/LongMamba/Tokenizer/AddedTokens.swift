// Added tokens are cut out of the text before pre-tokenization, as Hugging Face does:
// tokens with `normalized: false` (e.g. `<|endoftext|>`) are matched on the raw text, tokens
// with `normalized: true` (e.g. GPT-NeoX's space runs) on the normalized text. Matching is
// leftmost-longest (HF uses Aho-Corasick with that match kind), on UTF-8 bytes.

struct AddedTokenMatcher: Sendable {
    private var children: [UInt32: Int32] = [:]   // (node << 8 | byte) → child node
    private var terminal: [Int32] = [-1]          // token id ending at each node, or -1
    private var startsToken = [Bool](repeating: false, count: 256)

    var isEmpty: Bool { terminal.count == 1 }

    mutating func add(_ content: [UInt8], id: Int32) {
        guard let first = content.first else { return }
        startsToken[Int(first)] = true
        var node: Int32 = 0
        for b in content {
            let key = UInt32(node) << 8 | UInt32(b)
            if let child = children[key] {
                node = child
            } else {
                let child = Int32(terminal.count)
                terminal.append(-1)
                children[key] = child
                node = child
            }
        }
        // The first token wins when two share content, as in HF's vocabulary map.
        if terminal[Int(node)] < 0 { terminal[Int(node)] = id }
    }

    enum Segment { case text(Range<Int>), token(Int32) }

    /// Calls `body` for the text between matches and for each match, in order; empty text
    /// segments are not reported.
    func split(_ s: UnsafeBufferPointer<UInt8>, _ body: (Segment) -> Void) {
        let n = s.count
        if isEmpty {
            if n > 0 { body(.text(0..<n)) }
            return
        }
        var textStart = 0
        var i = 0
        while i < n {
            if !startsToken[Int(s[i])] { i += 1; continue }
            var node: Int32 = 0
            var j = i
            var bestEnd = -1
            var bestId: Int32 = -1
            while j < n, let child = children[UInt32(node) << 8 | UInt32(s[j])] {
                node = child
                j += 1
                if terminal[Int(node)] >= 0 { bestEnd = j; bestId = terminal[Int(node)] }
            }
            if bestEnd > 0 {
                if textStart < i { body(.text(textStart..<i)) }
                body(.token(bestId))
                i = bestEnd
                textStart = i
            } else {
                i += 1
            }
        }
        if textStart < n { body(.text(textStart..<n)) }
    }
}
