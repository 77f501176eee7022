// Tests of `imgtool grub` password input, through the built binary.

import Foundation
import Testing

@Suite struct GrubCommandTests {
    /// Runs `grub set-password` on a pseudo-terminal under `sh`, types a 300-byte password,
    /// then an empty line, and prints what the shell's next `read` received.
    static let terminalScript = #"""
    import os, pty, select, sys, time
    binary, pools, state = sys.argv[1:4]
    env = dict(os.environ, IMGTOOL_POOLS_ROOT=pools, IMGTOOL_STATE_DIR=state)
    script = f'"{binary}" grub set-password --vm-id 1 --password-form plain --password-file -; IFS= read -r rest; echo "rest=[$rest]"'
    pid, master = pty.fork()
    if pid == 0:
        os.execve("/bin/sh", ["sh", "-c", script], env)
    output = b""
    def read_until(marker, timeout=10):
        global output
        end = time.time() + timeout
        while marker not in output and time.time() < end:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    output += os.read(master, 4096)
                except OSError:
                    break
    read_until(b"Password: ")
    os.write(master, b"a" * 300 + b"\n")
    read_until(b"invalid password")
    time.sleep(0.3)
    os.write(master, b"\n")
    read_until(b"]\r\n")
    os.waitpid(pid, 0)
    sys.stdout.write(output.decode(errors="replace").split("rest=")[-1].strip())
    """#

    @Test func longTerminalPasswordLeavesNoInput() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("imgtool-grub-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let pools = directory.appendingPathComponent("pools").path
        let state = directory.appendingPathComponent("state").path
        try FileManager.default.createDirectory(atPath: "\(pools)/tank", withIntermediateDirectories: true)
        let activation = try runImgtool(["sharefs", "activate", "--pools-root", pools, "--state-dir", state])
        #expect(activation.status == 0, "\(activation.error)")

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", Self.terminalScript, imgtoolBinary(), pools, state]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // 300 bytes overflow the 258-byte read; the remaining 42 must not reach the shell.
        #expect(text == "[]")
    }
}
