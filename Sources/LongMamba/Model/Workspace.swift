// Scratch buffers the mixers reuse from layer to layer, one per named slot.
//
// Glossary (shapes for L tokens; see each mixer's glossary for the symbols)
//   Mamba-1: xz [L, 2·d_inner], x [L, d_inner], xDbl = dt_low|B|C [L, R + 2N],
//            dt [L, d_inner], y [L, d_inner]; scanScratch: the fast scan's gathers x, Δ [d_inner/16, L, 16]
//   Mamba-2: zxbcdt [L, d_inner + (d_inner + 2GN) + H], xBC [L, d_inner + 2GN], y [L, d_inner];
//            scanScratch: the fast scan's gathers x [H, L, P], B|C [G, L, 2N], Δ [H, L]
//   Zamba2 shared block: blockInput, blockNormed [L, 2D], query, attention [L, H_a·d_a],
//            gateUp [L, 2I], adapterMiddle [L, r], blockOutput [L, D], attentionScratch (CausalAttention)

/// What a workspace buffer holds (the tensor of that name in the mixer using it).
enum WorkspaceSlot: Hashable {
    // Mamba-1
    case xz, x, xDbl, dt
    // Mamba-2
    case zxbcdt, xBC
    // both: y, and the fast scan's gathered inputs
    case y, scanScratch
    // Zamba2's shared block: [h | h₀] and its norm [L, 2D], q / attention out [L, H·d], the MLP's
    // gate|up [L, 2I], an adapter's low-rank middle [L, r], block out [L, D], attention scratch
    case blockInput, blockNormed, query, attention, gateUp, adapterMiddle, blockOutput, attentionScratch
}

/// Buffers reused from layer to layer: big intermediates ([L, 2·d_inner] and the like) would
/// otherwise be fresh allocations whose page faults cost as much as a small matrix product.
/// `buffer` hands out room for at least `count` floats whose contents are unspecified (every user
/// overwrites what it reads); the pointer stays valid until the same slot is asked for again, so a
/// layer asks for each of its slots once, at the top of its forward pass.
final class Workspace {
    private var buffers: [WorkspaceSlot: (pointer: UnsafeMutablePointer<Float>, capacity: Int)] = [:]

    func buffer(_ slot: WorkspaceSlot, count: Int) -> UnsafeMutablePointer<Float> {
        if let b = buffers[slot], b.capacity >= count { return b.pointer }
        if let old = buffers[slot] { UnsafeMutableRawPointer(old.pointer).deallocate() }
        let capacity = max(count, 1)
        // Cache-line aligned, so that 16-float rows (one AVX-512 register) at multiples of 16 are one line each.
        let p = UnsafeMutableRawPointer.allocate(byteCount: capacity * MemoryLayout<Float>.stride, alignment: 64)
            .initializeMemory(as: Float.self, repeating: 0, count: capacity)
        buffers[slot] = (p, capacity)
        return p
    }

    deinit { for b in buffers.values { UnsafeMutableRawPointer(b.pointer).deallocate() } }
}
