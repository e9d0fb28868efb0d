#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A C array of `strdup` copies of strings (`nil` stays NULL), freed with the object.
///
/// One allocation owned by one object, instead of nested `withUnsafe...` closures: the array and every
/// string in it live exactly as long as the object.
final class CStringArray {
    let base: UnsafePointer<UnsafePointer<CChar>?>
    private let storage: UnsafeMutablePointer<UnsafePointer<CChar>?>
    private let count: Int

    /// Copies `strings`; nil when memory is exhausted (`strdup` failed).
    init?(_ strings: [String?]) {
        count = strings.count
        storage = .allocate(capacity: max(count, 1))
        storage.initialize(repeating: nil, count: max(count, 1))
        base = UnsafePointer(storage)
        for (i, string) in strings.enumerated() {
            guard let string else { continue }
            guard let copy = strdup(string) else { return nil }  // deinit frees the copies made so far
            storage[i] = UnsafePointer(copy)
        }
    }

    deinit {
        for i in 0..<count { free(UnsafeMutableRawPointer(mutating: storage[i])) }
        storage.deallocate()
    }
}
