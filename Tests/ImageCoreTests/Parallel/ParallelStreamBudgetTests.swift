// The budget of a chunk stream bounds the memory its waiting pieces keep alive. A piece
// of ISA-L output refers to part of a pooled block, and keeps the whole block.

import Foundation
import Synchronization
import Testing
@testable import ImageCore

@Suite("Parallel chunk stream budget")
struct ParallelStreamBudgetTests {
    @Test("small pieces of large blocks")
    func smallPiecesOfBlocks() throws {
        let blockSize = 1 << 20
        let budget = 4 << 20
        let pool = OutputBlockPool(blockSize: blockSize, maximumFree: 0)
        let stream = ChunkStream(budget: budget)
        let pushed = Atomic<Int>(0)
        // Each piece is the first 4 KiB of its own block, as when ISA-L's output is
        // mostly zero blocks, which become holes.
        let worker = Thread {
            for _ in 0..<64 {
                guard stream.push(.block(pool.take(), 0..<4096, crc: 0)) else { return }
                pushed.add(1, ordering: .relaxed)
            }
        }
        worker.start()
        // The worker blocks once the waiting blocks exceed the budget.
        let deadline = Date().addingTimeInterval(5)
        var last = -1
        while Date() < deadline {
            let count = pushed.load(ordering: .relaxed)
            if count == 64 || count == last { break }
            last = count
            Thread.sleep(forTimeInterval: 0.2)
        }
        let waiting = pushed.load(ordering: .relaxed)
        stream.abandon()
        #expect(waiting * blockSize <= budget + blockSize,
                "\(waiting) pieces of 1 MiB blocks wait in a stream with a budget of 4 MiB")
    }
}
