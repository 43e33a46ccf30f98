/// Why `calibrate` or `merge` stopped (nothing already committed is lost).
public enum CalibrationError: Error, CustomStringConvertible, Sendable, Equatable {
    case tooFewSamples(Int)
    case badShard(index: Int, count: Int)
    case noTrainingLength(modelDirectory: String)
    case noTokenizer(modelDirectory: String)
    /// The database already holds a run with other inputs (`existing`: its description;
    /// `differences`: "name: stored → this" for each input that differs).
    case otherCalibration(database: String, run: Int64, existing: String?, this: String, differences: [String])
    case corpusTooShort(sequences: Int, expected: Int, length: Int)
    case tokenOutsideVocabulary(sample: Int, token: Int, id: Int, vocabulary: Int, tokenizer: String)
    /// The tokenizer can produce ids the model has no embedding row for (checked before sampling).
    case tokenizerBeyondVocabulary(tokenizer: String, largestId: Int, vocabulary: Int, modelDirectory: String)
    /// The job's estimated memory exceeds what the machine has available (bytes).
    case insufficientMemory(modelDirectory: String, needed: Int, available: Int, residentWeights: Bool)
    // merge
    case noInputDatabases
    case notOneRun(input: String, runs: Int)
    case modelMismatch(input: String, found: String, others: String)
    case calibrationMismatch(input: String, description: String?)
    case outputHoldsOtherCalibration(output: String, run: Int64)
    case noRecordings

    /// What went wrong.
    public var reason: String {
        switch self {
        case .tooFewSamples: return "--samples must be at least 1"
        case let .badShard(i, n): return "--shard \(i)/\(n): expected i/n with 0 ≤ i < n"
        case let .noTrainingLength(dir): return "\(dir): the config does not say the model's training length"
        case let .noTokenizer(dir): return "\(dir) has no tokenizer.json and no --tokenizer was given"
        case let .otherCalibration(db, run, existing, this, differences):
            guard existing != nil else { return "\(db) already holds calibration run \(run) of imported recordings; this one is \(this)" }
            return "\(db) already holds calibration run \(run) with other inputs; they differ in \(differences.joined(separator: "; "))"
        case let .corpusTooShort(n, K, L): return "the corpus gave \(n) sequences, expected \(K) of \(L) tokens"
        case let .tokenOutsideVocabulary(k, t, id, V, _): return "sample \(k) token \(t) has id \(id) but the model's vocabulary has \(V) rows"
        case let .tokenizerBeyondVocabulary(tokenizer, largest, V, dir):
            return "\(tokenizer) has token ids up to \(largest), but the model in \(dir) has \(V) embedding rows (ids 0 to \(V - 1))"
        case let .insufficientMemory(dir, needed, available, _):
            return String(format: "%@: recording needs about %.1f GiB but %.1f GiB are available", dir, Double(needed) / 1073741824, Double(available) / 1073741824)
        case .noInputDatabases: return "no input databases given"
        case let .notOneRun(input, n): return "\(input) holds \(n) calibration runs; expected exactly one made by `calibrate`"
        case let .modelMismatch(input, found, others):
            return "\(input) was calibrated on model \(found.prefix(12)), the others on \(others.prefix(12)); refusing to merge"
        case let .calibrationMismatch(input, description):
            return "\(input) comes from another calibration (\(description ?? "?")); shards must share model, tokenizer, corpus, seed, K and L"
        case let .outputHoldsOtherCalibration(output, run): return "\(output) already holds run \(run) of another calibration; merge into a new database"
        case .noRecordings: return "the inputs hold no recordings"
        }
    }

    /// What to do about it, where that is not obvious.
    public var hint: String? {
        switch self {
        case .noTrainingLength: return "pass --length L (2048 for state-spaces Mamba/Mamba-2, 4096 for Zamba2)"
        case .noTokenizer: return "state-spaces checkpoints ship without one; pass --tokenizer with the GPT-NeoX-20B tokenizer.json"
        case .otherCalibration: return "use another --db for another calibration (each database holds one: model, tokenizer, corpus, seed, K, L and sampler options)"
        case let .insufficientMemory(_, _, _, resident):
            return resident ? "pass --resident-weights never (weights converted one layer at a time), or free memory" : "lower --length, or free memory"
        case let .tokenOutsideVocabulary(_, _, _, _, tokenizer): return "the tokenizer \(tokenizer) does not belong to this model"
        case .tokenizerBeyondVocabulary: return "the tokenizer does not belong to this model; pass the model's own with --tokenizer"
        default: return nil
        }
    }

    public var description: String { hint.map { "\(reason) (hint: \($0))" } ?? reason }
}
