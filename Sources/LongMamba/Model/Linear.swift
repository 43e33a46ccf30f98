// Matrix products through OpenBLAS: y = x · Wᵀ (+ b), the shape of every projection in Mamba.
import COpenBLAS

/// y: [rows, outFeatures] = x: [rows, inFeatures] · W: [outFeatures, inFeatures]ᵀ.
/// `xStride`/`yStride` let x and y be column slices of wider row-major matrices.
func linear(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, xStride: Int? = nil,
            weight: UnsafePointer<Float>, outFeatures: Int,
            into y: UnsafeMutablePointer<Float>, yStride: Int? = nil, bias: [Float]? = nil) {
    let ldx = Int32(xStride ?? inFeatures), ldy = Int32(yStride ?? outFeatures)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
                Int32(rows), Int32(outFeatures), Int32(inFeatures),
                1, x, ldx, weight, Int32(inFeatures), 0, y, ldy)
    if let bias {
        for r in 0..<rows {
            let row = y + r * Int(ldy)
            for j in 0..<outFeatures { row[j] += bias[j] }
        }
    }
}

/// The same product with W a checkpoint matrix, so that a projection is one line:
///   linear(u, rows: L, inFeatures: D, weight: w.inProj, outFeatures: 2 · d_inner, into: xz, bias: w.inProjBias)
func linear(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, xStride: Int? = nil,
            weight: WeightMatrix, outFeatures: Int,
            into y: UnsafeMutablePointer<Float>, yStride: Int? = nil, bias: [Float]? = nil) {
    precondition(weight.count == outFeatures * inFeatures, "weight has \(weight.count) values, not \(outFeatures) × \(inFeatures)")
    weight.withUnsafeBufferPointer { w in
        linear(x, rows: rows, inFeatures: inFeatures, xStride: xStride, weight: w.baseAddress!, outFeatures: outFeatures,
               into: y, yStride: yStride, bias: bias)
    }
}

/// Number of threads OpenBLAS uses (set once per process by the CLI).
public enum BLASThreads {
    public static func set(_ n: Int) { openblas_set_num_threads(Int32(n)) }
}
