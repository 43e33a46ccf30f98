// The BPE model: vocabulary, ranked merges, and the merge loop of Hugging Face tokenizers
// (`Word::merge_all`): a min-heap of candidate merges ordered by (rank, position), entries
// that went stale are skipped when popped. Pieces are merged directly from raw bytes: the
// byte-level spelling is only needed to look up the 256 initial symbols once at load time.

/// Open-addressing map from a pair of token ids to (rank, merged id); faster than `Dictionary`
/// in the inner loop because the key is hashed with one multiply.
struct MergeTable: Sendable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: MergeTable.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    @inline(__always)
    private func slot(_ k: UInt64) -> Int {
        Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 29) & mask
    }

    /// Inserts unless present; returns false when the pair was already there (first wins).
    mutating func insert(_ a: Int32, _ b: Int32, rank: Int32, merged: Int32) -> Bool {
        let k = MergeTable.key(a, b)
        var i = slot(k)
        while keys[i] != MergeTable.empty {
            if keys[i] == k { return false }
            i = (i + 1) & mask
        }
        keys[i] = k
        values[i] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
        return true
    }

    /// (rank, merged id) for a pair, or nil.
    @inline(__always)
    func lookup(_ a: Int32, _ b: Int32) -> (rank: Int32, merged: Int32)? {
        let k = MergeTable.key(a, b)
        var i = slot(k)
        while true {
            let stored = keys[i]
            if stored == k {
                let v = values[i]
                return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v & 0xFFFF_FFFF))
            }
            if stored == MergeTable.empty { return nil }
            i = (i + 1) & mask
        }
    }
}

struct BPEModel: Sendable {
    /// Vocabulary id of each raw byte's byte-level character (-1 when missing from the vocabulary).
    let byteIds: [Int32]
    let merges: MergeTable
    /// Id used for bytes missing from the vocabulary; nil means they are dropped, as HF does.
    let unknownId: Int32?
    let fuseUnknown: Bool
    /// With `ignore_merges`, a piece that is itself in the vocabulary is emitted whole.
    let wholeWordIds: [String: Int32]?

    /// Appends the ids of one pre-tokenized piece (raw bytes) to `out`.
    func encodePiece(_ bytes: UnsafeBufferPointer<UInt8>, into out: inout [Int32], scratch: inout MergeScratch) {
        if bytes.count == 1, byteIds[Int(bytes[0])] >= 0 {
            out.append(byteIds[Int(bytes[0])])
            return
        }
        if let whole = wholeWordIds, let id = whole[ByteLevel.spelling(of: bytes)] {
            out.append(id)
            return
        }
        scratch.reset()
        var lastWasUnknown = false
        for b in bytes {
            let id = byteIds[Int(b)]
            if id >= 0 {
                scratch.appendSymbol(id)
                lastWasUnknown = false
            } else if let unk = unknownId {
                if !(fuseUnknown && lastWasUnknown) { scratch.appendSymbol(unk) }
                lastWasUnknown = true
            }
        }
        scratch.mergeAll(merges)
        scratch.emit(into: &out)
    }
}

/// Reusable buffers for one merge loop: symbols as a doubly linked list plus a binary heap of
/// (rank << 32 | position) keys, so popping gives the lowest rank, then the leftmost position.
struct MergeScratch {
    var ids: [Int32] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var alive: [Bool] = []
    var heap: [UInt64] = []
    var heapMerged: [Int32] = []

    mutating func reset() {
        ids.removeAll(keepingCapacity: true)
        prev.removeAll(keepingCapacity: true)
        next.removeAll(keepingCapacity: true)
        alive.removeAll(keepingCapacity: true)
        heap.removeAll(keepingCapacity: true)
        heapMerged.removeAll(keepingCapacity: true)
    }

    mutating func appendSymbol(_ id: Int32) {
        let pos = Int32(ids.count)
        ids.append(id)
        prev.append(pos - 1)
        next.append(pos + 1)
        alive.append(true)
    }

    @inline(__always)
    private mutating func push(_ v: UInt64, _ merged: Int32) {
        heap.append(v)
        heapMerged.append(merged)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) >> 1
            if heap[parent] <= heap[i] { break }
            heap.swapAt(parent, i)
            heapMerged.swapAt(parent, i)
            i = parent
        }
    }

    @inline(__always)
    private mutating func pop() -> (UInt64, Int32)? {
        guard let top = heap.first else { return nil }
        let topMerged = heapMerged[0]
        let last = heap.removeLast()
        let lastMerged = heapMerged.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            heapMerged[0] = lastMerged
            var i = 0
            let n = heap.count
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                var m = l
                if l + 1 < n, heap[l + 1] < heap[l] { m = l + 1 }
                if heap[i] <= heap[m] { break }
                heap.swapAt(i, m)
                heapMerged.swapAt(i, m)
                i = m
            }
        }
        return (top, topMerged)
    }

    @inline(__always)
    private static func entry(rank: Int32, pos: Int) -> UInt64 {
        UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(pos)
    }

    mutating func mergeAll(_ merges: MergeTable) {
        let n = ids.count
        if n < 2 { return }
        next[n - 1] = -1
        for i in 0..<(n - 1) {
            if let m = merges.lookup(ids[i], ids[i + 1]) { push(MergeScratch.entry(rank: m.rank, pos: i), m.merged) }
        }
        while let (top, queuedMerge) = pop() {
            let pos = Int(top & 0xFFFF_FFFF)
            if !alive[pos] { continue }
            let right = Int(next[pos])
            if right < 0 { continue }
            // Stale entry: the pair at `pos` no longer merges into what was queued.
            guard let m = merges.lookup(ids[pos], ids[right]), m.merged == queuedMerge else { continue }
            ids[pos] = m.merged
            alive[right] = false
            let after = next[right]
            next[pos] = after
            if after >= 0 { prev[Int(after)] = Int32(pos) }
            let before = prev[pos]
            if before >= 0, let pm = merges.lookup(ids[Int(before)], ids[pos]) {
                push(MergeScratch.entry(rank: pm.rank, pos: Int(before)), pm.merged)
            }
            if after >= 0, let nm = merges.lookup(ids[pos], ids[Int(after)]) {
                push(MergeScratch.entry(rank: nm.rank, pos: pos), nm.merged)
            }
        }
    }

    func emit(into out: inout [Int32]) {
        for i in 0..<ids.count where alive[i] { out.append(ids[i]) }
    }
}

/// Cache of encoded pieces keyed by their raw bytes, stored in flat arenas so a lookup does not
/// allocate. Cleared wholesale when full: it only saves time, never changes results.
struct PieceCache {
    private var slotHash: [UInt64]
    private var slotKeyStart: [Int32]
    private var slotKeyLength: [Int32]
    private var slotValueStart: [Int32]
    private var slotValueLength: [Int32]
    private var keyArena: [UInt8] = []
    private var valueArena: [Int32] = []
    private var used = 0
    private let mask: Int
    private let maxEntries: Int
    static let maxPieceBytes = 256

    init(slots: Int = 1 << 16) {
        slotHash = [UInt64](repeating: 0, count: slots)
        slotKeyStart = [Int32](repeating: -1, count: slots)
        slotKeyLength = [Int32](repeating: 0, count: slots)
        slotValueStart = [Int32](repeating: 0, count: slots)
        slotValueLength = [Int32](repeating: 0, count: slots)
        mask = slots - 1
        maxEntries = slots / 2
    }

    @inline(__always)
    static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(bytes.count)
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h | 1  // never 0, so 0 can mean "empty"
    }

    /// Appends the cached ids for `bytes` to `out` and returns true, or returns false.
    func lookup(_ bytes: UnsafeBufferPointer<UInt8>, hash h: UInt64, into out: inout [Int32]) -> Bool {
        var i = Int(truncatingIfNeeded: h >> 20) & mask
        while slotHash[i] != 0 {
            if slotHash[i] == h, Int(slotKeyLength[i]) == bytes.count {
                let start = Int(slotKeyStart[i])
                var same = true
                for k in 0..<bytes.count where keyArena[start + k] != bytes[k] { same = false; break }
                if same {
                    let vs = Int(slotValueStart[i])
                    out.append(contentsOf: valueArena[vs..<(vs + Int(slotValueLength[i]))])
                    return true
                }
            }
            i = (i + 1) & mask
        }
        return false
    }

    mutating func insert(_ bytes: UnsafeBufferPointer<UInt8>, hash h: UInt64, ids: ArraySlice<Int32>) {
        if used >= maxEntries { clear() }
        var i = Int(truncatingIfNeeded: h >> 20) & mask
        while slotHash[i] != 0 { i = (i + 1) & mask }
        slotHash[i] = h
        slotKeyStart[i] = Int32(keyArena.count)
        slotKeyLength[i] = Int32(bytes.count)
        slotValueStart[i] = Int32(valueArena.count)
        slotValueLength[i] = Int32(ids.count)
        keyArena.append(contentsOf: bytes)
        valueArena.append(contentsOf: ids)
        used += 1
    }

    mutating func clear() {
        for i in 0..<slotHash.count { slotHash[i] = 0 }
        keyArena.removeAll(keepingCapacity: true)
        valueArena.removeAll(keepingCapacity: true)
        used = 0
    }
}
