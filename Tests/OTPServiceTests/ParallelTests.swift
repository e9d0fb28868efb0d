import Testing

@testable import OTPService

/// `Parallel.map`, which decodes a rebuild's batches and replay's streams on every core.
@Suite struct ParallelTests {
    @Test(arguments: [0, 1, 63, 64, 65, 1_000, 20_001])
    func keepsTheOrderAndEveryElement(count: Int) {
        let items = Array(0..<count)
        #expect(Parallel.map(items) { $0 * 3 + 1 } == items.map { $0 * 3 + 1 })
    }
}
