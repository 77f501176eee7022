// CancellationToken with a parent: a part of an operation that can be stopped alone.

import Testing
@testable import ImageCore

@Suite struct CancellationTokenTests {
    @Test func parentCancelsChild() {
        let parent = CancellationToken()
        let child = CancellationToken(parent: parent)
        parent.cancel()
        #expect(child.isCancelled)
    }

    @Test func childDoesNotCancelParent() {
        let parent = CancellationToken()
        let child = CancellationToken(parent: parent)
        child.cancel()
        #expect(child.isCancelled)
        #expect(!parent.isCancelled)
    }

    @Test func childCheckThrowsAfterParentCancel() {
        let parent = CancellationToken()
        let child = CancellationToken(parent: parent)
        parent.cancel()
        #expect(throws: CancelledError.self) { try child.check("test operation") }
    }
}
