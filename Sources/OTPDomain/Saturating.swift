extension Int64 {
    /// `self + other`, held at `Int64.min`/`Int64.max` instead of trapping: times come from the database, and a
    /// row edited to the end of time must make a session look expired or overdue, not crash the process.
    public func saturatingAdd(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        guard overflow else { return sum }
        return other > 0 ? .max : .min
    }

    /// `self - other`, saturating like `saturatingAdd`.
    public func saturatingSubtract(_ other: Int64) -> Int64 {
        let (difference, overflow) = subtractingReportingOverflow(other)
        guard overflow else { return difference }
        return other < 0 ? .max : .min
    }
}
