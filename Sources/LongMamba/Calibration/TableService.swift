// Tables from stored recordings (docs/method.md §3-5): the solver reads a complete run's
// samples layer by layer from the store and the result is saved as an immutable table (an equal
// table of the same run is reused, see `CalibrationStore.saveTable`).
// `calibrate`, `merge`, `solve` and `sweep` all come through here.
import Foundation

public struct TableService {
    public let store: CalibrationStore

    public init(store: CalibrationStore) { self.store = store }

    /// The paper's grid, for runs that recorded none: a row every 1000 tokens up to 256k.
    public static let defaultGrid = (interval: 1000, maxLength: 256_000)

    /// The grid a table of this run is solved on when the caller gives none: the one the run was
    /// calibrated with (`CalibrationStore.calibratedGrid`), else the paper's.
    public func grid(run runID: Int64, interval: Int? = nil, maxLength: Int? = nil) throws -> (interval: Int, maxLength: Int) {
        if let interval, let maxLength { return (interval, maxLength) }
        let stored = try store.calibratedGrid(run: runID) ?? Self.defaultGrid
        return (interval ?? stored.interval, maxLength ?? stored.maxLength)
    }

    /// The solver's parameters for a stored run: `trainingLength` nil uses the run's recorded L;
    /// `interval` and `maxLength` nil use the grid the run was calibrated with.
    public func parameters(run runID: Int64, clampFraction: Double, aggregation: Aggregation, interval: Int? = nil,
                           maxLength: Int? = nil, trainingLength: Int? = nil) throws -> SolverParameters {
        let run = try store.run(runID)
        let grid = try grid(run: runID, interval: interval, maxLength: maxLength)
        let p = SolverParameters(clampFraction: clampFraction, aggregation: aggregation, interval: grid.interval, maxLength: grid.maxLength,
                                 trainingLength: trainingLength ?? run.sampleLength)
        try p.validate()
        return p
    }

    /// Solves a complete stored run and returns the id of its table: a new row, or the stored
    /// table with the same parameters and content hash (tables are immutable; a rerun or a
    /// second process adds nothing).
    /// Each stored sample is decoded once per solve (not once per length) and reports
    /// `.solvedLayer` after every layer.
    public func solve(run runID: Int64, parameters: SolverParameters, method: SolverMethod = .fast,
                      progress: (CalibrationEvent) -> Void = { _ in }) throws -> Int64 {
        let run = try store.run(runID)
        guard run.status == .complete else { throw StoreError.runNotComplete(path: store.path, run: runID, status: run.status) }
        try parameters.validate()
        let start = Date()
        var layers: [LayerTable] = []
        for i in 0..<run.layerCount {
            let samples = try store.layerSamples(run: runID, layer: i)
            guard samples.count == run.sampleCount else {
                throw StoreError.missingSamples(path: store.path, run: runID, layer: i, stored: samples.count, expected: run.sampleCount)
            }
            layers.append(try DeltaThresholdSolver.solveLayer(samples: samples, parameters: parameters, method: method))
            progress(.solvedLayer(done: i + 1, layers: run.layerCount, seconds: Date().timeIntervalSince(start)))
        }
        return try store.saveTable(run: runID, parameters: parameters, layers: layers)
    }

    /// `solve(run:parameters:)` with the parameters spelled out.
    public func solve(run runID: Int64, clampFraction: Double, aggregation: Aggregation, interval: Int? = nil, maxLength: Int? = nil,
                      trainingLength: Int? = nil, method: SolverMethod = .fast) throws -> Int64 {
        try solve(run: runID, parameters: try parameters(run: runID, clampFraction: clampFraction, aggregation: aggregation,
                                                          interval: interval, maxLength: maxLength, trainingLength: trainingLength),
                  method: method)
    }

    /// One table per parameter set, reusing a LongMamba table of the run with exactly those
    /// parameters (rerunning `calibrate` or `merge` adds nothing) and solving the others.
    public func tables(run runID: Int64, for grid: [SolverParameters], progress: (CalibrationEvent) -> Void = { _ in }) throws -> [Int64] {
        let existing = try store.tables().filter { $0.runID == runID && $0.method == CalibrationStore.longMambaMethod }
        var ids: [Int64] = []
        for parameters in grid {
            if let table = existing.first(where: { $0.parameters == parameters }) {
                ids.append(table.id)
                progress(.reused(table: table.id))
                continue
            }
            progress(.solving(clampFraction: parameters.clampFraction, aggregation: parameters.aggregation))
            let id = try solve(run: runID, parameters: parameters, progress: progress)
            ids.append(id)
            progress(.solved(table: id))
        }
        return ids
    }
}
