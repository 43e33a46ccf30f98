// Passkey retrieval (needle in a haystack), the task on which the paper shows its largest gains
// (RULER S2: 0 % → 73 % at 32k). A prompt of exactly S tokens:
//
//   instruction · haystack[0 ..< i] · needle · haystack[i ..< H] · question
//   needle   = " The pass key is NNNNN. Remember it. NNNNN is the pass key."
//   question = " What is the pass key? The pass key is"
//
// with i at the requested depth d ∈ [0, 1] of the haystack (snapped to a filler-sentence
// boundary for the default haystack). The model greedy-decodes a few tokens; a trial counts when
// the first run of digits it writes is the key. LongMamba filters the prefill only (the row for
// S, as in the runner); decoding carries the state without filtering.
import Foundation

/// Builds passkey prompts of an exact token length.
public struct PasskeyPrompts {
    public static let instruction = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information there."
    /// The filler of the passkey literature (Landmark Attention, Mohtashami & Jaggi 2023).
    public static let filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    public static let question = " What is the pass key? The pass key is"
    public static func needle(_ key: String) -> String { " The pass key is \(key). Remember it. \(key) is the pass key." }

    let tokenizer: BPETokenizer
    let instructionTokens: [Int]
    let questionTokens: [Int]
    /// One repeat unit of the haystack (a filler paragraph, or the whole --haystack text).
    let haystackUnit: [Int]
    /// Insertion points snap to multiples of this (the filler's length; 1 for a custom haystack).
    let boundary: Int
    public let customHaystack: Bool

    /// - haystack: tokens of a text to use instead of the filler (repeated when too short).
    public init(tokenizer: BPETokenizer, haystack: [Int]? = nil) throws {
        self.tokenizer = tokenizer
        instructionTokens = tokenizer.encode(Self.instruction)
        questionTokens = tokenizer.encode(Self.question)
        if let haystack {
            guard !haystack.isEmpty else { throw PasskeyError.emptyHaystack }
            haystackUnit = haystack; boundary = 1; customHaystack = true
        } else {
            haystackUnit = tokenizer.encode(Self.filler); boundary = haystackUnit.count; customHaystack = false
        }
        // The key must survive a round trip through the tokenizer, or no answer could be exact.
        let probe = "12345"
        guard (try? tokenizer.decode(tokenizer.encode(" " + probe))) == " " + probe else { throw PasskeyError.digitsNotEncodable }
    }

    /// Tokens of the haystack around the needle for this length (nil: the length cannot hold
    /// instruction, needle and question).
    public func prompt(length S: Int, depth: Double, key: String) throws -> (tokens: [Int], needleStart: Int) {
        guard depth >= 0, depth <= 1, depth.isFinite else { throw PasskeyError.depthOutOfRange(depth) }
        let needle = tokenizer.encode(Self.needle(key))
        let H = S - instructionTokens.count - needle.count - questionTokens.count
        guard H >= 0 else {
            throw PasskeyError.lengthTooShort(length: S, needed: instructionTokens.count + needle.count + questionTokens.count)
        }
        var haystack: [Int] = []
        haystack.reserveCapacity(H)
        while haystack.count < H { haystack.append(contentsOf: haystackUnit.prefix(H - haystack.count)) }
        let insertion = min(H, Int((depth * Double(H) / Double(boundary)).rounded()) * boundary)
        let tokens = instructionTokens + haystack[..<insertion] + needle + haystack[insertion...] + questionTokens
        return (tokens, instructionTokens.count + insertion)
    }

    /// The prompts for a model directory: its tokenizer.json (or `tokenizer`) and the filler, or
    /// the text of `haystack`.
    public init(modelDirectory: String, tokenizer path: String?, haystack: String?) throws {
        let tokenizerPath = path ?? BPETokenizer.defaultPath(modelDirectory: modelDirectory)
        guard FileManager.default.fileExists(atPath: tokenizerPath) else { throw EvaluationError.noTokenizer(modelDirectory: modelDirectory) }
        let tokenizer = try BPETokenizer(contentsOf: tokenizerPath)
        var tokens: [Int]?
        if let haystack {
            guard let data = FileManager.default.contents(atPath: haystack) else { throw EvaluationError.unreadableText(path: haystack) }
            tokens = try tokenizer.encode(utf8: [UInt8](data), source: haystack)
        }
        try self.init(tokenizer: tokenizer, haystack: tokens)
    }

    /// Whether the haystack unit had to be repeated to fill `length`.
    public func repeatsHaystack(length S: Int) -> Bool {
        let needle = tokenizer.encode(Self.needle("12345")).count  // every key is five digits
        return customHaystack && S - instructionTokens.count - needle - questionTokens.count > haystackUnit.count
    }

    /// The key a trial uses: five digits from the seed, the length, the depth and the trial.
    public static func key(seed: UInt64, length: Int, depth: Double, trial: Int) -> String {
        var rng = SplitMix64(seed: seed ^ UInt64(truncatingIfNeeded: length) &* 0x9E37_79B9_7F4A_7C15
                             ^ depth.bitPattern &* 0xBF58_476D_1CE4_E5B9 ^ UInt64(truncatingIfNeeded: trial) &* 0x94D0_49BB_1331_11EB)
        return String(10_000 + Int(rng.next() % 90_000))
    }

    /// The first run of digits in a decoded answer.
    public static func answer(in text: String) -> String? {
        guard let start = text.firstIndex(where: \.isASCIIDigit) else { return nil }
        return String(text[start...].prefix(while: \.isASCIIDigit))
    }
}

private extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

/// Why a passkey evaluation was refused.
public enum PasskeyError: Error, CustomStringConvertible, Sendable, Equatable {
    case depthOutOfRange(Double)
    case lengthTooShort(length: Int, needed: Int)
    case emptyHaystack
    case digitsNotEncodable
    case noTrials

    public var description: String {
        switch self {
        case let .depthOutOfRange(d): return "depth \(d) is outside [0, 1] (0 = right after the instruction, 1 = right before the question)"
        case let .lengthTooShort(S, needed): return "length \(S) cannot hold the passkey prompt: instruction, needle and question alone take \(needed) tokens"
        case .emptyHaystack: return "the haystack text is empty"
        case .digitsNotEncodable: return "the tokenizer does not round-trip digits (\" 12345\"), so no answer could match the key"
        case .noTrials: return "--trials must be at least 1"
        }
    }
}

/// One (length, depth) cell of a passkey evaluation.
public struct PasskeyPoint: Sendable, Codable, Equatable {
    public var length: Int
    public var depth: Double
    public var trials: Int
    public var vanillaAccuracy: Double
    public var longMambaAccuracy: Double?
    /// Share of Δ kept in global channels during the LongMamba prefills (1 = nothing filtered).
    public var keptShare: Double?
    public var tabulatedLength: Int?
}

/// Everything `eval --task passkey` measured, as written to JSON.
public struct PasskeyResults: Sendable, Codable {
    public var task = "passkey"
    public var model: String
    public var modelFingerprint: String
    public var haystack: String
    public var haystackRepeated: Bool
    public var seed: UInt64
    public var theta: Double?
    public var table: String?
    /// Content hash of the table applied (nil: vanilla only, or results of an older tool).
    public var tableContentHash: String?
    public var filterFromLength: Int?
    /// How global channels were filtered, where not dt_thre (absent: dt_thre, or results of an older tool).
    public var method: String?
    public var promptsPerSecond: Double
    public var points: [PasskeyPoint]

    public func json() throws -> Data {
        // snake_case keys, as every JSON the tool writes (lookup, recording, exports).
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.keyEncodingStrategy = .convertToSnakeCase
        return try e.encode(self)
    }

    /// Reads snake_case keys, and the camelCase keys of files written before (unchanged by the conversion).
    static var decoder: JSONDecoder { let d = JSONDecoder(); d.keyDecodingStrategy = .convertFromSnakeCase; return d }

    public static func load(_ path: String) throws -> PasskeyResults {
        guard let data = FileManager.default.contents(atPath: path) else { throw EvaluationError.unreadableResults(path: path) }
        do { return try Self.decoder.decode(PasskeyResults.self, from: data) } catch {
            throw EvaluationError.notEvaluationResults(path: path, detail: SystemMessage.of(error))
        }
    }

    public var csv: String {
        var s = "length,depth,trials,vanilla_accuracy,longmamba_accuracy,kept_share,tabulated_length\n"
        for p in points {
            s += "\(p.length),\(p.depth),\(p.trials),\(p.vanillaAccuracy),\(p.longMambaAccuracy.map { "\($0)" } ?? ""),"
            s += "\(p.keptShare.map { "\($0)" } ?? ""),\(p.tabulatedLength.map(String.init) ?? "")\n"
        }
        return s
    }
}

/// One passkey prompt as evaluated (`eval --task passkey --dump-prompts`).
public struct PasskeyPrompt: Sendable, Codable, Equatable {
    public var length: Int
    public var depth: Double
    public var trial: Int
    public var key: String
    /// Index of the needle's first token.
    public var needleStart: Int
    public var tokens: [Int]
}

/// Runs passkey trials with and without a table.
public struct PasskeyEvaluation: TableEvaluationSettings {
    public var model: MambaModel
    public var prompts: PasskeyPrompts
    public var table: (any PrefillTableSource)?
    public var theta = GlobalChannels.defaultTheta
    public var filterFromLength: Int?
    public var allowBeyondTable = false
    public var trials = 10
    public var seed: UInt64 = 0
    /// Tokens per prefill chunk.
    public var chunk = 1024
    /// false: skip the vanilla prompts where the filter applies (`tune` stores vanilla once);
    /// vanilla accuracy is then NaN at those lengths.
    public var includeVanilla = true
    /// Prefill the part before the needle once per (length, depth, method) and continue every
    /// trial from a copy of its state (false: every trial prefills its whole prompt).
    public var reusePrefix = true
    /// Called with every prompt before it runs (`eval --dump-prompts`).
    public var onPrompt: ((PasskeyPrompt) -> Void)?
    /// How global channels are filtered; a whole-prompt method prefills each filtered prompt in
    /// one piece, without prefix reuse.
    public var method = LongMambaMethod.dtThre

    public init(model: MambaModel, prompts: PasskeyPrompts, table: (any PrefillTableSource)? = nil) {
        self.model = model; self.prompts = prompts; self.table = table
    }

    /// Prefills `tokens` onto `state` in chunks (filtered by `filter`, scaled by `scales` when given).
    func prefill(_ tokens: ArraySlice<Int>, onto state: inout SequenceState, filter: DeltaFilter?, scales: LayerScales? = nil) throws {
        var none = DiscardingRecorder()
        var start = tokens.startIndex
        while start < tokens.endIndex {
            let end = min(tokens.endIndex, start + chunk)
            try model.forward(tokens: Array(tokens[start..<end]), continuing: &state, recorder: &none, deltaFilter: filter, layerScales: scales)
            start = end
        }
    }

    /// Greedy answer of a prompt whose tokens before `tokens` already left `state`: prefills
    /// `tokens` (filtered by `filter` when given), then decodes `steps` tokens without
    /// filtering, carrying the state.
    /// `wholePrompt`: the filter needs every token at once: one forward over all of `tokens`.
    func answer(continuing state: SequenceState, _ tokens: ArraySlice<Int>, filter: DeltaFilter?, scales: LayerScales? = nil, steps: Int,
                wholePrompt: Bool = false) throws -> String {
        var state = state
        var none = DiscardingRecorder()
        var logits: [Float]
        if wholePrompt {
            let all = try model.forward(tokens: Array(tokens), continuing: &state, recorder: &none, computeLogits: true, deltaFilter: filter)
            logits = Array(all.suffix(model.config.paddedVocabSize))   // the last token's row
        } else {
            try prefill(tokens.dropLast(), onto: &state, filter: filter, scales: scales)
            logits = try model.forward(tokens: [tokens[tokens.endIndex - 1]], continuing: &state, recorder: &none, computeLogits: true, deltaFilter: filter,
                                       layerScales: scales)
        }
        var generated: [Int] = []
        let V = min(model.config.vocabSize, prompts.tokenizer.vocabularySize)  // never pick a padding row
        for step in 0..<steps {
            var best = 0
            for v in 1..<V where logits[v] > logits[best] { best = v }
            generated.append(best)
            if step + 1 < steps {
                logits = try model.forward(tokens: [best], continuing: &state, recorder: &none, computeLogits: true)
            }
        }
        return try prompts.tokenizer.decode(generated)
    }

    /// The state after a prefix shared by the trials of one (length, depth) whose needle starts there, and the filter
    /// counts it added (nil: prefix reuse is off, every trial starts empty).
    struct SharedPrefix {
        var length: Int
        var state: SequenceState
        var considered = 0, kept = 0
    }

    func sharedPrefix(_ tokens: ArraySlice<Int>, filter: LongMambaFilter?, scales: LayerScales? = nil) throws -> SharedPrefix {
        var state = SequenceState(layerCount: model.config.layerCount)
        guard reusePrefix, filter?.method.needsWholePrompt != true else { return SharedPrefix(length: 0, state: state) }
        let run = filter.map { LongMambaFilterRun(filter: $0) }
        try prefill(tokens, onto: &state, filter: run?.deltaFilter, scales: scales)
        return SharedPrefix(length: tokens.count, state: state, considered: run?.considered.reduce(0, +) ?? 0, kept: run?.kept.reduce(0, +) ?? 0)
    }

    public func run(lengths: [Int], depths: [Double], progress: (String) -> Void = { _ in }) throws -> (points: [PasskeyPoint], promptsPerSecond: Double) {
        guard trials >= 1 else { throw PasskeyError.noTrials }
        guard theta > 0 else { throw EvaluationError.nonPositiveTheta(theta) }
        for d in depths where !(d >= 0 && d <= 1) { throw PasskeyError.depthOutOfRange(d) }
        var points: [PasskeyPoint] = []
        var prompts = 0
        let started = Date()
        for S in lengths {
            let prefill = try table.map {
                try LongMambaPrefill(table: $0, model: model, length: S, theta: theta, filterFrom: filterFromLength, allowBeyondTable: allowBeyondTable, method: method)
            }
            let filter = prefill?.run?.filter
            let scales = prefill?.scales   // a scale table's s_l at S (filter is then nil)
            let active = prefill?.isActive ?? false
            let measureVanilla = includeVanilla || !active
            for depth in depths {
                var vanillaHits = 0, longMambaHits = 0
                var kept = 0.0, filtered = 0
                // Everything before the needle is the same in every trial whose needle starts at the
                // same token (keys of another token count move it): prefill it once per start and
                // method and continue each trial from a copy of its state. Exact, because the
                // filter acts on each token's own Δ (causal).
                var vanillaPrefixes: [Int: SharedPrefix] = [:], filteredPrefixes: [Int: SharedPrefix] = [:]
                func shared(_ cache: inout [Int: SharedPrefix], _ prompt: (tokens: [Int], needleStart: Int), filter: LongMambaFilter?,
                            scales: LayerScales? = nil) throws -> SharedPrefix {
                    if let hit = cache[prompt.needleStart] { return hit }
                    let made = try sharedPrefix(prompt.tokens[..<prompt.needleStart], filter: filter, scales: scales)
                    cache[prompt.needleStart] = made
                    return made
                }
                for trial in 0..<trials {
                    progress("passkey length \(S) depth \(depth): trial \(trial + 1)/\(trials)")
                    let key = PasskeyPrompts.key(seed: seed, length: S, depth: depth, trial: trial)
                    let prompt = try self.prompts.prompt(length: S, depth: depth, key: key)
                    onPrompt?(PasskeyPrompt(length: S, depth: depth, trial: trial, key: key, needleStart: prompt.needleStart, tokens: prompt.tokens))
                    let steps = self.prompts.tokenizer.encode(" " + key).count + 1
                    var vanilla = false
                    if measureVanilla {
                        let vanillaPrefix = try shared(&vanillaPrefixes, prompt, filter: nil)
                        let answer = try answer(continuing: vanillaPrefix.state, prompt.tokens[vanillaPrefix.length...], filter: nil, steps: steps)
                        vanilla = PasskeyPrompts.answer(in: answer) == key
                        vanillaHits += vanilla ? 1 : 0
                        prompts += 1
                    }
                    if let scales {
                        // Per-layer scales act on each token's own Δ or on A: causal, so the prefix is shared too.
                        let scaledPrefix = try shared(&filteredPrefixes, prompt, filter: nil, scales: scales)
                        let answer = try answer(continuing: scaledPrefix.state, prompt.tokens[scaledPrefix.length...], filter: nil, scales: scales, steps: steps)
                        longMambaHits += PasskeyPrompts.answer(in: answer) == key ? 1 : 0
                        kept += 1
                        filtered += 1
                        prompts += 1
                    } else if let filter {
                        let filteredPrefix = try shared(&filteredPrefixes, prompt, filter: filter)
                        // A fresh counter per prompt: the filter is the same, the counts are this prompt's.
                        let run = LongMambaFilterRun(filter: filter)
                        let answer = try answer(continuing: filteredPrefix.state, prompt.tokens[filteredPrefix.length...], filter: run.deltaFilter, steps: steps,
                                                wholePrompt: filter.method.needsWholePrompt)
                        if run.piecewise { throw EvaluationError.wholePromptInPieces(method: filter.method.rawValue) }
                        longMambaHits += PasskeyPrompts.answer(in: answer) == key ? 1 : 0
                        let considered = filteredPrefix.considered + run.considered.reduce(0, +)
                        kept += considered == 0 ? 1 : Double(filteredPrefix.kept + run.kept.reduce(0, +)) / Double(considered)
                        filtered += 1
                        prompts += 1
                    } else {
                        longMambaHits += vanilla ? 1 : 0  // below the filter start LongMamba is vanilla: one prefill serves both
                    }
                }
                var point = PasskeyPoint(length: S, depth: depth, trials: trials, vanillaAccuracy: measureVanilla ? Double(vanillaHits) / Double(trials) : .nan)
                if table != nil {
                    point.longMambaAccuracy = Double(longMambaHits) / Double(trials)
                    point.keptShare = filtered > 0 ? kept / Double(filtered) : 1
                    point.tabulatedLength = prefill?.tabulatedLength
                }
                points.append(point)
            }
        }
        let seconds = Date().timeIntervalSince(started)
        return (points, seconds > 0 ? Double(prompts) / seconds : 0)
    }
}
