// A small command-line parser: options with values (`--threads 4`, `--threads=4`),
// flags (`--force`), positionals, and `--` to end options.
// The toolchain's ArgumentParser cannot be imported by packages, so imgtool has its own.

import ImageCore

/// A usage error: exits 64 with the command's usage line.
struct UsageError: ImageError {
    var message: String
    var category: FailureCategory { .usage }
    var description: String { message }
    var remedy: String? { "run 'imgtool help' or 'imgtool COMMAND --help' for usage" }
}

/// The parsed arguments of one command.
struct Arguments {
    private(set) var positionals: [String] = []
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []
    let helpRequested: Bool

    /// Parses `arguments`. `options` take a value; `flags` do not. Anything else that
    /// starts with `-` (except `-` alone) is a usage error, unless
    /// `negativeNumbersArePositionals` is set and it looks like a negative number ("-1",
    /// "-.5"), which no option does.
    init(_ arguments: [String], options: Set<String> = [], flags: Set<String> = [],
         negativeNumbersArePositionals: Bool = false) throws {
        var help = false
        var index = 0
        var onlyPositionals = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            let negativeNumber = negativeNumbersArePositionals && Arguments.looksLikeNegativeNumber(argument)
            if onlyPositionals || !argument.hasPrefix("-") || argument == "-" || negativeNumber {
                positionals.append(argument)
                continue
            }
            if argument == "--" {
                onlyPositionals = true
                continue
            }
            if argument == "--help" || argument == "-h" {
                help = true
                continue
            }
            var name = argument
            var inlineValue: String?
            if let equals = argument.firstIndex(of: "="), argument.hasPrefix("--") {
                name = String(argument[..<equals])
                inlineValue = String(argument[argument.index(after: equals)...])
            }
            if options.contains(name) {
                if let inlineValue {
                    values[name, default: []].append(inlineValue)
                } else if index < arguments.count {
                    values[name, default: []].append(arguments[index])
                    index += 1
                } else {
                    throw UsageError(message: "option \(name) needs a value")
                }
            } else if flags.contains(name), inlineValue == nil {
                self.flags.insert(name)
            } else {
                throw UsageError(message: "unknown option '\(argument)'")
            }
        }
        helpRequested = help
    }

    static func looksLikeNegativeNumber(_ argument: String) -> Bool {
        guard argument.hasPrefix("-"), let second = argument.dropFirst().first else { return false }
        return second.isNumber || second == "."
    }

    /// The last value given for `name`, or nil.
    func value(_ name: String) -> String? { values[name]?.last }

    /// Every value given for a repeatable option, in order.
    func allValues(_ name: String) -> [String] { values[name] ?? [] }

    func flag(_ name: String) -> Bool { flags.contains(name) }

    /// The value of `name` parsed as an integer in `range`.
    func integer(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = value(name) else { return nil }
        guard let number = Int(text), range.contains(number) else {
            throw UsageError(message: "invalid \(name) '\(text)': expected a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    /// Checks the positional count; `names` appear in the message.
    func requirePositionals(_ range: ClosedRange<Int>, names: String) throws {
        guard range.contains(positionals.count) else {
            if positionals.count < range.lowerBound { throw UsageError(message: "missing argument: expected \(names)") }
            throw UsageError(message: "unexpected argument '\(positionals[range.upperBound])': expected \(names)")
        }
    }
}
