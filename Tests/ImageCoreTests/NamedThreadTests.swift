// `Thread.named` gives a thread its kernel name, as /proc shows it to `top -H` and `ps -L`.

import CSystem
import Foundation
import Testing
@testable import ImageCore

@Suite struct NamedThreadTests {
    /// Starts a thread named `name` and returns its name as /proc/self/task/TID/comm has it.
    private func kernelName(of name: String) throws -> String {
        let seen = Recorded<String>()
        let done = DispatchSemaphore(value: 0)
        Thread.named(name) {
            let comm = (try? String(contentsOfFile: "/proc/self/task/\(imgtool_gettid())/comm", encoding: .utf8)) ?? ""
            seen.append(comm.trimmingCharacters(in: .newlines))
            done.signal()
        }.start()
        done.wait()
        return try #require(seen.values.first)
    }

    @Test func shortNameReachesKernel() throws {
        #expect(try kernelName(of: "inflate-3") == "inflate-3")
    }

    @Test func longNameIsCut() throws {
        #expect(try kernelName(of: "a-name-longer-than-15") == "a-name-longer-t")
    }

    // "é" is 2 bytes in UTF-8, so byte 15 is the first half of the eighth "é". Cutting
    // there would leave /proc with an invalid name, which decodes to nothing here.
    @Test func multibyteNameIsCutBetweenCharacters() throws {
        #expect(try kernelName(of: "ééééééééé") == "ééééééé")
        #expect(try kernelName(of: "job-€€€€") == "job-€€€")
    }
}
