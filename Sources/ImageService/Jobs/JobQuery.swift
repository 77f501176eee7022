// The middleware's query language for list methods such as `core.get_jobs`.
//
// Filters are a list; every entry must match. An entry is `[field, operator, value]`
// (a dotted field reads nested members, for example `progress.percent`) or
// `["OR", [entry, ...]]`. Operators: = != < <= > >= in nin ^ (starts with) $ (ends with)
// ~ (regular expression matched at the start, as Python's re.match) and !^ !$.
// Options: `get` (the first match alone), `limit`, `offset`, `order_by` (a field,
// `-field` for descending, optionally after `nulls_first:` or `nulls_last:`), `select`
// (fields to keep, dotted allowed) and `count` (the number of matches).

import Foundation

public struct JobQuery: Sendable {
    indirect enum Filter: Sendable {
        /// `regex` is the compiled pattern of a `~` filter, compiled once per query.
        case compare(field: String, operator: String, value: JSONValue, regex: NSRegularExpression?)
        case any([Filter])
    }

    struct Ordering: Sendable {
        var field: String
        var descending: Bool
        var nullsFirst: Bool
    }

    var filters: [Filter] = []
    var get = false
    var count = false
    var limit: Int?
    var offset = 0
    var orderBy: [Ordering] = []
    var select: [String]?

    /// Seconds that the `~` matches of one query may take in total.
    static let regexTimeLimit: TimeInterval = 1

    static let operators: Set<String> = ["=", "!=", "<", "<=", ">", ">=", "in", "nin", "^", "$", "~", "!^", "!$"]

    /// Parses `filters` and `options` as a call sends them; either may be null or absent.
    public init(filters: JSONValue?, options: JSONValue?) throws(RPCError) {
        if let filters, !filters.isNull {
            guard let list = filters.arrayValue else {
                throw RPCError.invalidParameter("filters", "expected a list of [field, operator, value], got \(filters.typeDescription)")
            }
            self.filters = try list.map { entry throws(RPCError) in try JobQuery.parseFilter(entry) }
        }
        guard let options, !options.isNull else { return }
        guard let members = options.objectValue else {
            throw RPCError.invalidParameter("options", "expected an object, got \(options.typeDescription)")
        }
        for (key, value) in members {
            switch key {
            case "get": get = try JobQuery.bool(value, "options.get")
            case "count": count = try JobQuery.bool(value, "options.count")
            case "limit": limit = try JobQuery.count(value, "options.limit")
            case "offset": offset = try JobQuery.count(value, "options.offset") ?? 0
            case "order_by":
                guard let fields = value.arrayValue else {
                    throw RPCError.invalidParameter("options.order_by", "expected a list of field names")
                }
                orderBy = try fields.map { field throws(RPCError) in try JobQuery.parseOrdering(field) }
            case "select":
                guard let fields = value.arrayValue, fields.allSatisfy({ $0.stringValue != nil }) else {
                    throw RPCError.invalidParameter("options.select", "expected a list of field names")
                }
                select = fields.compactMap(\.stringValue)
            case "extra", "force_sql_filters", "relationships", "prefix":
                // Accepted for compatibility with the middleware's clients; they change
                // nothing for jobs kept in memory.
                break
            default:
                throw RPCError.invalidParameter("options.\(key)", "unknown option; expected get, limit, offset, order_by, select or count")
            }
        }
        if limit == 0 { limit = nil }
    }

    /// Applies the query to `items`: the matching list, one object (`get`) or a count.
    public func apply(to items: [JSONValue]) throws(RPCError) -> JSONValue {
        // A pattern such as `(a+)+b` backtracks exponentially in the length of the text,
        // and job texts carry caller paths; all `~` matches of one query share this budget.
        let deadline = Date(timeIntervalSinceNow: JobQuery.regexTimeLimit)
        var slowPattern: String?
        var matched = items.filter { item in filters.allSatisfy { JobQuery.matches(item, $0, deadline, &slowPattern) } }
        if let slowPattern {
            throw RPCError.invalidParameter("filters", "regular expression '\(slowPattern)' took longer than \(Int(JobQuery.regexTimeLimit)) s to match; give a simpler one")
        }
        if !orderBy.isEmpty {
            matched.sort { left, right in
                for ordering in orderBy {
                    let result = JobQuery.compareForSort(left.value(atPath: ordering.field), right.value(atPath: ordering.field),
                                                         nullsFirst: ordering.nullsFirst)
                    if result == 0 { continue }
                    return ordering.descending ? result > 0 : result < 0
                }
                return false
            }
        }
        if count { return .integer(matched.count) }
        if offset > 0 { matched = Array(matched.dropFirst(offset)) }
        if let limit { matched = Array(matched.prefix(limit)) }
        if let select { matched = matched.map { JobQuery.project($0, select) } }
        if get {
            guard let first = matched.first else { throw RPCError.call(ENOENT, "ENOENT", "no job matches the filters") }
            return first
        }
        return .array(matched)
    }

    // MARK: Parsing

    private static func parseFilter(_ entry: JSONValue) throws(RPCError) -> Filter {
        guard let parts = entry.arrayValue else {
            throw RPCError.invalidParameter("filters", "each filter must be a list, got \(entry.typeDescription)")
        }
        if parts.count == 2, parts[0].stringValue == "OR" {
            guard let alternatives = parts[1].arrayValue, !alternatives.isEmpty else {
                throw RPCError.invalidParameter("filters", "OR needs a non-empty list of filters")
            }
            return .any(try alternatives.map { alternative throws(RPCError) in try parseFilter(alternative) })
        }
        guard parts.count == 3, let field = parts[0].stringValue, let op = parts[1].stringValue else {
            throw RPCError.invalidParameter("filters", "expected [field, operator, value], got \(entry)")
        }
        guard operators.contains(op) else {
            throw RPCError.invalidParameter("filters", "unknown operator '\(op)'; expected one of \(operators.sorted().joined(separator: " "))")
        }
        if op == "in" || op == "nin", parts[2].arrayValue == nil {
            throw RPCError.invalidParameter("filters", "operator '\(op)' needs a list value")
        }
        if ["^", "$", "~", "!^", "!$"].contains(op), parts[2].stringValue == nil {
            throw RPCError.invalidParameter("filters", "operator '\(op)' needs a string value")
        }
        var regex: NSRegularExpression?
        if op == "~", let pattern = parts[2].stringValue {
            regex = try? NSRegularExpression(pattern: pattern)
            if regex == nil { throw RPCError.invalidParameter("filters", "invalid regular expression '\(pattern)'") }
        }
        return .compare(field: field, operator: op, value: parts[2], regex: regex)
    }

    private static func parseOrdering(_ value: JSONValue) throws(RPCError) -> Ordering {
        guard var text = value.stringValue, !text.isEmpty else {
            throw RPCError.invalidParameter("options.order_by", "expected field names as strings")
        }
        var nullsFirst = false
        if text.hasPrefix("nulls_first:") {
            nullsFirst = true
            text.removeFirst("nulls_first:".count)
        } else if text.hasPrefix("nulls_last:") {
            text.removeFirst("nulls_last:".count)
        }
        let descending = text.hasPrefix("-")
        if descending { text.removeFirst() }
        return Ordering(field: text, descending: descending, nullsFirst: nullsFirst)
    }

    private static func bool(_ value: JSONValue, _ name: String) throws(RPCError) -> Bool {
        guard let flag = value.boolValue else { throw RPCError.invalidParameter(name, "expected true or false") }
        return flag
    }

    private static func count(_ value: JSONValue, _ name: String) throws(RPCError) -> Int? {
        if value.isNull { return nil }
        guard let number = value.int64Value, number >= 0, number <= Int64(Int32.max) else {
            throw RPCError.invalidParameter(name, "expected a whole number of 0 or more")
        }
        return Int(number)
    }

    // MARK: Matching

    private static func matches(_ item: JSONValue, _ filter: Filter, _ deadline: Date, _ slowPattern: inout String?) -> Bool {
        if slowPattern != nil { return false }
        switch filter {
        case .any(let alternatives):
            return alternatives.contains { matches(item, $0, deadline, &slowPattern) }
        case .compare(let field, let op, let expected, let regex):
            let actual = item.value(atPath: field) ?? .null
            switch op {
            case "=": return equal(actual, expected)
            case "!=": return !equal(actual, expected)
            case "<": return order(actual, expected).map { $0 < 0 } ?? false
            case "<=": return order(actual, expected).map { $0 <= 0 } ?? false
            case ">": return order(actual, expected).map { $0 > 0 } ?? false
            case ">=": return order(actual, expected).map { $0 >= 0 } ?? false
            case "in": return expected.arrayValue?.contains { equal(actual, $0) } ?? false
            case "nin": return !(expected.arrayValue?.contains { equal(actual, $0) } ?? false)
            case "^": return actual.stringValue.map { $0.hasPrefix(expected.stringValue!) } ?? false
            case "!^": return !(actual.stringValue.map { $0.hasPrefix(expected.stringValue!) } ?? false)
            case "$": return actual.stringValue.map { $0.hasSuffix(expected.stringValue!) } ?? false
            case "!$": return !(actual.stringValue.map { $0.hasSuffix(expected.stringValue!) } ?? false)
            case "~":
                guard let text = actual.stringValue, let pattern = expected.stringValue, let regex else { return false }
                let range = NSRange(text.startIndex..., in: text)
                var found = false
                var timedOut = false
                // With .reportProgress the block also runs periodically during a long match.
                regex.enumerateMatches(in: text, options: [.anchored, .reportProgress], range: range) { match, _, stop in
                    if match != nil {
                        found = true
                        stop.pointee = true
                    } else if Date() > deadline {
                        timedOut = true
                        stop.pointee = true
                    }
                }
                if timedOut { slowPattern = pattern }
                return found
            default: return false
            }
        }
    }

    /// Equality with numbers compared by value, so `1` equals `1.0`.
    static func equal(_ left: JSONValue, _ right: JSONValue) -> Bool {
        if let a = left.doubleValue, let b = right.doubleValue { return a == b }
        return left == right
    }

    /// -1, 0 or 1 for two numbers or two strings; nil for values of different types,
    /// which never satisfy an ordering filter.
    static func order(_ left: JSONValue, _ right: JSONValue) -> Int? {
        if let a = left.doubleValue, let b = right.doubleValue { return a < b ? -1 : (a > b ? 1 : 0) }
        if let a = left.stringValue, let b = right.stringValue { return a < b ? -1 : (a > b ? 1 : 0) }
        if let a = left["$date"]?.doubleValue, let b = right["$date"]?.doubleValue { return a < b ? -1 : (a > b ? 1 : 0) }
        return nil
    }

    private static func compareForSort(_ left: JSONValue?, _ right: JSONValue?, nullsFirst: Bool) -> Int {
        let leftNull = left == nil || left == .null
        let rightNull = right == nil || right == .null
        if leftNull && rightNull { return 0 }
        if leftNull { return nullsFirst ? -1 : 1 }
        if rightNull { return nullsFirst ? 1 : -1 }
        return order(left!, right!) ?? 0
    }

    /// Keeps only `fields` of `item`; a dotted field keeps that nested member.
    private static func project(_ item: JSONValue, _ fields: [String]) -> JSONValue {
        var result: JSONValue = .object([:])
        for field in fields {
            guard let value = item.value(atPath: field) else { continue }
            result = insert(value, at: field.split(separator: ".").map(String.init)[...], into: result)
        }
        return result
    }

    private static func insert(_ value: JSONValue, at path: ArraySlice<String>, into target: JSONValue) -> JSONValue {
        guard let key = path.first else { return value }
        var members = target.objectValue ?? [:]
        members[key] = insert(value, at: path.dropFirst(), into: members[key] ?? .object([:]))
        return .object(members)
    }
}
