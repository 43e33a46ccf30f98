// `longmamba calibrate-scales`: per-layer scales (delta_scale, a_power) by SPSA on Pile text of
// each target length (docs/method.md "Per-layer scale methods"). Every step is committed to the
// store; a rerun resumes after the last one and gives the same table.
//
// Glossary (one target length S, n layers):
//   u ∈ ℝⁿ       log-scales, s = exp(u); u = 0 is the vanilla model
//   f(u)         mean NLL (nats, f64) of tokens 1…S−1 of every sample, scales applied in prefill
//   a_k, c_k     step size a / (k + A)^0.602 and perturbation c / k^0.101 at step k ≥ 1;
//                a = step_size·(j + A)^0.602 / |ĝ_j| at the first step j with finite losses
//   δ_k          ±1 per layer from SplitMix64(seed ^ S·φ ^ k·ψ), top bit of each draw
//   v±           f32(u ± c_k·δ_k): the two points evaluated at step k
//   ĝ            (f(v+) − f(v−)) / (2·c_k·δ_k): the simultaneous-perturbation gradient
//   u ← f32(clamp(u − clip(a_k·ĝ, ±step_size), −3, 3));  best ← the evaluated point of lowest f
import Foundation

public struct ScaleCalibrationOptions: Sendable {
    public var modelDirectory: String
    public var corpusPaths: [String]
    public var databasePath: String
    public var runID: Int64
    public var method: ScaleMethod
    /// Target lengths S (each calibrated separately).
    public var lengths: [Int]
    public var sampleCount = 20
    public var steps = 50
    public var stepSize = 0.1
    public var perturbation = 0.1
    /// A (nil: ⌈steps / 10⌉, Spall's advice).
    public var stability: Int?
    /// nil: the run's sampling seed.
    public var seed: UInt64?
    public var tokenizerPath: String?
    public var subsets: [String] = []
    /// Sample and store the job, run no step (another backend, e.g. Python on a GPU, runs it).
    public var prepareOnly = false
    /// Tokens per forward chunk while evaluating f (exact: the scales apply to every chunk of the prefill).
    public var chunk = 1024

    public init(modelDirectory: String, corpusPaths: [String], databasePath: String, runID: Int64, method: ScaleMethod, lengths: [Int]) {
        self.modelDirectory = modelDirectory; self.corpusPaths = corpusPaths; self.databasePath = databasePath
        self.runID = runID; self.method = method; self.lengths = lengths
    }
}

/// What `calibrate-scales` reports while it runs.
public enum ScaleCalibrationEvent: Sendable {
    case sampling(samples: Int, length: Int)
    case job(id: Int64, reused: Bool)
    case resumed(length: Int, steps: Int)
    /// One committed step: f at v±, the best perplexity so far and at the start (u = 0).
    case step(length: Int, step: Int, of: Int, lossPlus: Double?, lossMinus: Double?, bestPerplexity: Double, startPerplexity: Double, outcome: String)
}

public enum ScaleCalibrationError: Error, CustomStringConvertible, Sendable, Equatable {
    case noLengths
    case badSettings(String)
    case otherModel(run: Int64, runFingerprint: String, modelFingerprint: String)
    case otherTokenizer(run: Int64, runTokenizer: String, tokenizer: String)
    case lengthTooShort(Int)

    public var description: String {
        switch self {
        case .noLengths: return "give the target lengths with --lengths (e.g. --lengths 4k,8k)"
        case let .badSettings(detail): return detail
        case let .otherModel(run, runFingerprint, modelFingerprint):
            return "run \(run) was recorded on model \(runFingerprint.prefix(12)), not on this one (\(modelFingerprint.prefix(12))): scales are calibrated for the run's model"
        case let .otherTokenizer(run, runTokenizer, tokenizer):
            return "run \(run) was sampled with tokenizer \(runTokenizer.prefix(12)), not this one (\(tokenizer.prefix(12))); pass the run's tokenizer with --tokenizer"
        case let .lengthTooShort(S): return "length \(S) is too short: a target length needs at least 2 tokens"
        }
    }
}

/// The SPSA schedule and perturbations (shared with Python: docs/method.md).
public enum SPSA {
    /// The ±1 of every layer at step k ≥ 1 of length S.
    public static func perturbation(seed: UInt64, length: Int, step: Int, layers: Int) -> [Float] {
        var rng = SplitMix64(seed: seed ^ UInt64(truncatingIfNeeded: length) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: step) &* 0xBF58_476D_1CE4_E5B9)
        return (0..<layers).map { _ in rng.next() >> 63 == 0 ? 1 : -1 }
    }
    /// a_k = a / (k + A)^0.602
    public static func stepSize(_ a: Double, stability: Int, step k: Int) -> Double { a / Foundation.pow(Double(k + stability), 0.602) }
    /// a from the first step j with finite losses: that step moves every u_l by `stepSize`.
    public static func gain(stepSize: Double, stability: Int, step j: Int, lossPlus: Double, lossMinus: Double, perturbation c: Double) -> Double {
        let g = abs(lossPlus - lossMinus) / (2 * perturbationSize(c, step: j))
        return g > 0 ? stepSize * Foundation.pow(Double(j + stability), 0.602) / g : stepSize
    }
    /// c_k = c / k^0.101
    public static func perturbationSize(_ c: Double, step k: Int) -> Double { c / Foundation.pow(Double(k), 0.101) }
    /// The bound on |u|: s stays within [e⁻³, e³].
    public static let logScaleBound = 3.0
    /// s = f32(exp(u)) of a point u.
    public static func scales(_ u: [Float]) -> [Float] { u.map { Float(Foundation.exp(Double($0))) } }

    /// One step's new u: u − clip(a_k·ĝ, ±stepSize), clamped to ±logScaleBound and rounded to f32;
    /// nil when f+ or f− is not finite (the step is rejected and u stays).
    public static func update(_ u: [Float], perturbation delta: [Float], lossPlus: Double, lossMinus: Double, perturbationSize ck: Double,
                              stepSize ak: Double, maximumMove: Double) -> [Float]? {
        guard lossPlus.isFinite, lossMinus.isFinite else { return nil }
        return zip(u, delta).map { ui, d in
            let g = (lossPlus - lossMinus) / (2 * ck * Double(d))
            let move = min(maximumMove, max(-maximumMove, ak * g))   // no step moves u_l by more than step_size
            return Float(min(logScaleBound, max(-logScaleBound, Double(ui) - move)))
        }
    }
}

/// Runs (or resumes) one scale calibration.
public struct ScaleCalibrationJob {
    public let options: ScaleCalibrationOptions
    public init(options: ScaleCalibrationOptions) { self.options = options }

    public struct Result: Sendable {
        public var job: Int64
        /// nil with `prepareOnly`.
        public var table: Int64?
        /// Forward passes of S tokens this invocation ran, and steps it committed.
        public var forwardPasses: Int
        public var stepsRun: Int
    }

    public func run(model: MambaModel? = nil, progress: (ScaleCalibrationEvent) -> Void = { _ in }) throws -> Result {
        let o = options
        guard !o.lengths.isEmpty else { throw ScaleCalibrationError.noLengths }
        let lengths = Array(Set(o.lengths)).sorted()
        if let S = lengths.first, S < 2 { throw ScaleCalibrationError.lengthTooShort(S) }
        guard o.sampleCount >= 1, o.steps >= 0, o.stepSize > 0, o.perturbation > 0, (o.stability ?? 0) >= 0 else {
            throw ScaleCalibrationError.badSettings("--samples ≥ 1, --steps ≥ 0, --step-size > 0, --perturbation > 0 and --stability ≥ 0 are needed")
        }
        let store = try CalibrationStore(path: o.databasePath)
        let run = try store.run(o.runID)
        let storedModel = try store.model(run.modelID)
        let model = try model ?? MambaModel(directory: o.modelDirectory)
        let fingerprint = model.checkpoint.fingerprint()
        guard fingerprint == storedModel.fingerprint else {
            throw ScaleCalibrationError.otherModel(run: o.runID, runFingerprint: storedModel.fingerprint, modelFingerprint: fingerprint)
        }
        let seed = o.seed ?? UInt64(bitPattern: run.seed ?? 0)
        let stability = o.stability ?? (o.steps + 9) / 10

        // The samples: K sequences of the largest S, packed from the run's corpus with its seed.
        let tokenizerPath = o.tokenizerPath ?? BPETokenizer.defaultPath(modelDirectory: o.modelDirectory)
        guard FileManager.default.fileExists(atPath: tokenizerPath) else { throw CalibrationError.noTokenizer(modelDirectory: o.modelDirectory) }
        let tokenizer = try BPETokenizer(contentsOf: tokenizerPath)
        if let runTokenizer = run.tokenizerHash, runTokenizer != tokenizer.sha256 {
            throw ScaleCalibrationError.otherTokenizer(run: o.runID, runTokenizer: runTokenizer, tokenizer: tokenizer.sha256)
        }
        progress(.sampling(samples: o.sampleCount, length: lengths.last!))
        let sampler = try CorpusSampler(files: try CorpusFile.expand(o.corpusPaths), tokenizer: tokenizer,
                                        options: SamplerOptions(count: o.sampleCount, length: lengths.last!, seed: seed, packing: .packed, subsets: o.subsets))
        let samples = try sampler.run().sequences.map { $0.map(Int.init) }
        let samplesHash = SHA256.hash(data: samples.flatMap { $0.map { Int32(truncatingIfNeeded: $0) } }.littleEndianData).hexString
        let parameters = ScaleTableParameters(lengths: lengths, perturbation: o.perturbation, sampleCount: samples.count, samplesHash: samplesHash,
                                              seed: seed, stability: stability, stepSize: o.stepSize, steps: o.steps, trainingLength: run.sampleLength)
        let job = try store.scaleJob(run: o.runID, method: o.method, parameters: parameters, samples: samples)
        let jobID = job.id!
        let reused = try lengths.contains { try !store.scaleSteps(job: jobID, length: $0).isEmpty }
        progress(.job(id: jobID, reused: reused))
        if o.prepareOnly { return Result(job: jobID, table: job.tableID, forwardPasses: 0, stepsRun: 0) }

        let n = model.config.layerCount
        var evaluation = PerplexityEvaluation(model: model)
        evaluation.chunk = o.chunk
        var passes = 0, stepsRun = 0
        // f(u): mean NLL over every sample's first S tokens (NaN when a forward gives a non-finite value).
        func loss(_ u: [Float], length S: Int) throws -> Double {
            let scales = LayerScales(method: o.method, scales: SPSA.scales(u))
            var sum = 0.0, count = 0
            for sample in samples {
                let r = try evaluation.negativeLogLikelihood(Array(sample.prefix(S)), deltaFilter: nil, layerScales: scales)
                sum += r.sum; count += r.count
                passes += 1
            }
            return sum / Double(count)
        }
        var best: [[Float]] = []   // best u per length: [T][n]
        for S in lengths {
            var steps = try store.scaleSteps(job: jobID, length: S)
            if !steps.isEmpty { progress(.resumed(length: S, steps: steps.count - 1)) }
            if steps.isEmpty {
                let u0 = [Float](repeating: 0, count: n)
                let f0 = try loss(u0, length: S)
                guard f0.isFinite else { throw ScaleCalibrationError.badSettings("the vanilla model's loss at length \(S) is not finite (\(f0)); nothing to calibrate from") }
                let row = ScaleStepRecord(job: jobID, length: S, step: 0, logScales: u0, lossPlus: nil, lossMinus: nil, bestLoss: f0, bestLogScales: u0, outcome: "start")
                steps = [try store.appendScaleStep(row)]
                progress(.step(length: S, step: 0, of: o.steps, lossPlus: nil, lossMinus: nil, bestPerplexity: Foundation.exp(f0), startPerplexity: Foundation.exp(f0), outcome: "start"))
            }
            let start = Foundation.exp(steps[0].bestLoss)
            var last = steps.last!
            // a, from the first stored step with finite losses (nil until there is one).
            var gain: Double? = steps.first { $0.step >= 1 && $0.lossPlus != nil && $0.lossMinus != nil }.map {
                SPSA.gain(stepSize: o.stepSize, stability: stability, step: $0.step, lossPlus: $0.lossPlus!, lossMinus: $0.lossMinus!, perturbation: o.perturbation)
            }
            while last.step < o.steps {
                let k = last.step + 1
                let u = last.logScales
                let ck = SPSA.perturbationSize(o.perturbation, step: k)
                let delta = SPSA.perturbation(seed: seed, length: S, step: k, layers: n)
                let plus = zip(u, delta).map { Float(Double($0) + ck * Double($1)) }
                let minus = zip(u, delta).map { Float(Double($0) - ck * Double($1)) }
                let fPlus = try loss(plus, length: S), fMinus = try loss(minus, length: S)
                var next = u, bestLoss = last.bestLoss, bestU = last.bestLogScales
                var outcome = "step"
                if fPlus.isFinite && fMinus.isFinite {
                    if gain == nil {
                        gain = SPSA.gain(stepSize: o.stepSize, stability: stability, step: k, lossPlus: fPlus, lossMinus: fMinus, perturbation: o.perturbation)
                    }
                    next = SPSA.update(u, perturbation: delta, lossPlus: fPlus, lossMinus: fMinus, perturbationSize: ck,
                                       stepSize: SPSA.stepSize(gain!, stability: stability, step: k), maximumMove: o.stepSize)!
                    if fPlus < bestLoss { bestLoss = fPlus; bestU = plus }
                    if fMinus < bestLoss { bestLoss = fMinus; bestU = minus }
                } else {
                    outcome = "rejected: non-finite loss (f+ \(fPlus), f− \(fMinus))"
                    if fPlus.isFinite && fPlus < bestLoss { bestLoss = fPlus; bestU = plus }
                    if fMinus.isFinite && fMinus < bestLoss { bestLoss = fMinus; bestU = minus }
                }
                let row = ScaleStepRecord(job: jobID, length: S, step: k, logScales: next, lossPlus: fPlus.isFinite ? fPlus : nil,
                                          lossMinus: fMinus.isFinite ? fMinus : nil, bestLoss: bestLoss, bestLogScales: bestU, outcome: outcome)
                // Another process may have committed this step first: continue from what is stored.
                last = try store.appendScaleStep(row)
                stepsRun += 1
                progress(.step(length: S, step: k, of: o.steps, lossPlus: last.lossPlus, lossMinus: last.lossMinus,
                               bestPerplexity: Foundation.exp(last.bestLoss), startPerplexity: start, outcome: last.outcome))
            }
            best.append(last.bestLogScales)
        }
        // s_l(S_t) = f32(exp(best u)): [n][T]
        let scales = (0..<n).map { l in best.map { SPSA.scales([$0[l]])[0] } }
        let table = try store.finishScaleJob(job, parameters: parameters, scales: scales)
        return Result(job: jobID, table: table, forwardPasses: passes, stepsRun: stepsRun)
    }
}
