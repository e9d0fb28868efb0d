import Foundation
import OTPDomain
import OTPService

/// The analysts' dashboard: one tenant's `DashboardFigures` as a self-contained HTML page, and as JSON.
///
/// The page fetches nothing: its CSS is inline, its charts are server-rendered SVG and it has no script. Every
/// text that comes from the figures or the tenant is escaped for HTML. The renderer is pure: the same figures
/// and tenant give the same bytes (times are written in UTC from the figures' own clock).
public enum Dashboard {
    /// The STATS keys, in PROTOCOL.md's order: the table's columns and the JSON's channel keys.
    public static let statsKeys = [
        "group", "issued", "sent", "delivered", "failed", "escalated", "verified", "expired", "delivery_rate",
        "conversion_rate", "p50_delivery_ms", "p95_delivery_ms", "p50_verify_ms", "cost", "cost_per_verification",
    ]

    /// The page's Content-Security-Policy: nothing may be fetched, inline styles only.
    public static let contentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

    /// `/dashboard.json`: `{"tenant", "generated_at", "channels", "hours", "paths"}`, `channels` being
    /// STATS SINCE 86400 BY channel with STATS' keys.
    public static func json(_ figures: DashboardFigures, tenant: String) throws -> [UInt8] {
        struct Body: Encodable {
            var tenant: String
            var generatedAt: Int64
            var channels: [StatsGroup]
            var hours: [HourFigures]
            var paths: [PathFigures]
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        let body = Body(
            tenant: tenant,
            generatedAt: figures.generatedAt,
            channels: figures.channels,
            hours: figures.hours,
            paths: figures.paths
        )
        return Array(try encoder.encode(body))
    }

    /// `/dashboard`: the page.
    public static func html(_ figures: DashboardFigures, tenant: String) -> String {
        let t = esc(tenant)
        let generated = utc(figures.generatedAt)
        var page = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta name="color-scheme" content="light">
            <title>otpd dashboard · \(t)</title>
            <style>\(css)</style></head>
            <body>
            <header><div class="wrap"><div><h1>otpd <span>dashboard</span></h1>
            <p class="meta">Tenant <strong data-tenant="\(t)">\(t)</strong> · last 24 hours · \
            generated <time data-generated="\(figures.generatedAt)">\(generated)</time></p></div>
            <a class="json" href="dashboard.json">JSON</a></div></header>
            <main class="wrap">

            """
        page += kpis(figures.channels)
        page += "<div class=\"grid\">\n"
        page += card(
            "Funnel per channel",
            "Issued → sent → delivered → verified. A session is issued once, in its first step's channel; "
                + "every message counts as sent in its own channel.",
            legend([
                ("issued", issuedColour), ("sent", sentColour), ("delivered", deliveredColour),
                ("verified", verifiedColour),
            ]) + funnel(figures.channels),
            id: "funnel"
        )
        page += card(
            "Delivery and conversion rate",
            "Delivery rate: delivered ÷ sent. Conversion: verified ÷ issued (a fallback channel can pass 100%, "
                + "verifying sessions issued elsewhere; bars stop at 100%).",
            legend([("delivery rate", deliveredColour), ("conversion rate", verifiedColour)])
                + rates(figures.channels),
            id: "rates"
        )
        page += card(
            "Send → delivery latency",
            "From the hand-off to the provider to the first delivery receipt: median (p50) and 95th percentile.",
            legend([("p50", p50Colour), ("p95", p95Colour)]) + latency(figures.channels),
            id: "latency"
        )
        let statuses = orderedStatuses(figures.paths)
        page += card(
            "Fallback paths and how they ended",
            "Sessions by the channels they went through, most taken first, split by final status.",
            legend(statuses.map { ($0, statusColour($0)) }) + paths(figures.paths, statuses: statuses),
            id: "paths"
        )
        page += card(
            "Last 24 hours by hour",
            "Sessions issued, messages delivered and sessions verified per hour of issue (UTC).",
            legend([("issued", issuedColour), ("delivered", deliveredColour), ("verified", verifiedColour)])
                + hours(figures.hours),
            id: "hours",
            wide: true
        )
        page += card(
            "STATS SINCE 86400 BY channel",
            "The figures above, as the STATS command answers them.",
            table(figures.channels),
            id: "stats",
            wide: true
        )
        page += """
            </div>
            <footer>otpd · figures from the projections, as STATS SINCE 86400 BY channel · \
            <a href="dashboard.json">dashboard.json</a></footer>
            </main></body></html>

            """
        return page
    }

    // MARK: Sections

    static func kpis(_ channels: [StatsGroup]) -> String {
        let sum = { (k: KeyPath<StatsGroup, Int64>) in channels.reduce(Int64(0)) { $0 + $1[keyPath: k] } }
        let (issued, sent, delivered) = (sum(\.issued), sum(\.sent), sum(\.delivered))
        let (verified, escalated, failed) = (sum(\.verified), sum(\.escalated), sum(\.failed))
        var items: [(String, String, String)] = [
            ("Sessions issued", grouped(issued), "kpi-issued"),
            ("Messages sent", grouped(sent), "kpi-sent"),
            ("Delivery rate", percent(delivered, sent), "kpi-delivery"),
            ("Verified", grouped(verified), "kpi-verified"),
            ("Conversion", percent(verified, issued), "kpi-conversion"),
            ("Escalations", grouped(escalated), "kpi-escalated"),
            ("Failed sends", grouped(failed), "kpi-failed"),
        ]
        // Spend, when anything is priced ([prices], or a provider's reported price).
        let priced = channels.compactMap(\.costMicros)
        if !priced.isEmpty {
            let spent = priced.reduce(0, +)
            items.append(("Spend", Money(micros: spent).fourDecimals, "kpi-cost"))
            items.append(
                (
                    "Cost per verification",
                    verified > 0 ? Money.fourDecimals(spent, dividedBy: verified) : "–", "kpi-cost-per-verification"
                )
            )
        }
        var out = "<section class=\"kpis\">"
        for (label, value, id) in items {
            out +=
                "<div class=\"kpi\" id=\"\(id)\"><div class=\"k\">\(label)</div><div class=\"v\">\(value)</div></div>"
        }
        return out + "</section>\n"
    }

    static func card(_ title: String, _ subtitle: String, _ body: String, id: String, wide: Bool = false) -> String {
        """
        <section class="card\(wide ? " wide" : "")" id="\(id)"><h2>\(esc(title))</h2>\
        <p class="sub">\(esc(subtitle))</p>\(body)</section>

        """
    }

    static func legend(_ items: [(String, String)]) -> String {
        guard !items.isEmpty else { return "" }
        var out = "<div class=\"legend\">"
        for (label, colour) in items {
            out += "<span><i class=\"sw\" style=\"background:\(colour)\"></i>\(esc(label))</span>"
        }
        return out + "</div>"
    }

    static func empty(_ text: String = "No sessions in the last 24 hours.") -> String {
        "<p class=\"empty\">\(esc(text))</p>"
    }

    /// Grouped vertical bars: issued, sent, delivered, verified per channel.
    static func funnel(_ channels: [StatsGroup]) -> String {
        guard !channels.isEmpty else { return empty() }
        let (w, h) = (540.0, 270.0)
        let (left, right, top, bottom) = (48.0, 8.0, 22.0, 40.0)
        let plotW = w - left - right
        let plotH = h - top - bottom
        let series: [(String, KeyPath<StatsGroup, Int64>, String)] = [
            ("issued", \.issued, issuedColour), ("sent", \.sent, sentColour),
            ("delivered", \.delivered, deliveredColour), ("verified", \.verified, verifiedColour),
        ]
        let highest = channels.flatMap { g in series.map { g[keyPath: $0.1] } }.max() ?? 0
        let scale = countScale(highest)
        var svg = svgOpen(w, h, label: "Funnel per channel: issued, sent, delivered and verified")
        svg += yAxis(scale, left: left, top: top, plotW: plotW, plotH: plotH, format: grouped)
        let band = plotW / Double(channels.count)
        let barW = min(34, (band * 0.78) / Double(series.count))
        let groupW = barW * Double(series.count)
        for (i, g) in channels.enumerated() {
            let x0 = left + band * Double(i) + (band - groupW) / 2
            for (j, s) in series.enumerated() {
                let v = g[keyPath: s.1]
                let bh = plotH * Double(v) / Double(scale.top)
                let x = x0 + barW * Double(j)
                let y = top + plotH - bh
                svg += "<rect x=\"\(n(x + 1))\" y=\"\(n(y))\" width=\"\(n(barW - 2))\" height=\"\(n(bh))\" "
                svg += "fill=\"\(s.2)\" rx=\"2\"><title>\(esc(g.group)) \(s.0): \(v)</title></rect>"
                if barW >= 16 {
                    svg += "<text x=\"\(n(x + barW / 2))\" y=\"\(n(y - 4))\" class=\"val\" "
                    svg += "text-anchor=\"middle\">\(grouped(v))</text>"
                }
            }
            svg += "<text x=\"\(n(left + band * (Double(i) + 0.5)))\" y=\"\(n(top + plotH + 18))\" "
            svg += "class=\"cat\" text-anchor=\"middle\">\(esc(g.group))</text>"
        }
        svg += "<text x=\"\(n(left + plotW / 2))\" y=\"\(n(h - 4))\" class=\"axis\" "
        svg += "text-anchor=\"middle\">channel</text>"
        svg += "<text x=\"12\" y=\"\(n(top + plotH / 2))\" class=\"axis\" text-anchor=\"middle\" "
        svg += "transform=\"rotate(-90 12 \(n(top + plotH / 2)))\">sessions / messages</text>"
        return svg + "</svg>"
    }

    /// Horizontal bars from 0 to 100 %: the delivery rate and the conversion rate per channel.
    static func rates(_ channels: [StatsGroup]) -> String {
        guard !channels.isEmpty else { return empty() }
        let (left, right, top) = (72.0, 58.0, 8.0)
        let (barH, gap, groupGap) = (14.0, 3.0, 16.0)
        let w = 540.0
        let plotW = w - left - right
        let groupH = barH * 2 + gap
        let plotH = Double(channels.count) * groupH + Double(channels.count - 1) * groupGap
        let h = top + plotH + 40
        var svg = svgOpen(w, h, label: "Delivery rate and conversion rate per channel")
        for tick in [0, 25, 50, 75, 100] {
            let x = left + plotW * Double(tick) / 100
            svg +=
                "<line x1=\"\(n(x))\" y1=\"\(n(top - 4))\" x2=\"\(n(x))\" y2=\"\(n(top + plotH + 4))\" class=\"grid\"/>"
            svg +=
                "<text x=\"\(n(x))\" y=\"\(n(top + plotH + 18))\" class=\"tick\" text-anchor=\"middle\">\(tick)%</text>"
        }
        for (i, g) in channels.enumerated() {
            let y0 = top + Double(i) * (groupH + groupGap)
            svg += "<text x=\"\(n(left - 8))\" y=\"\(n(y0 + groupH / 2 + 4))\" class=\"cat\" "
            svg += "text-anchor=\"end\">\(esc(g.group))</text>"
            let rows = [
                ("delivery rate", g.deliveryRate, deliveredColour), ("conversion", g.conversionRate, verifiedColour),
            ]
            for (j, r) in rows.enumerated() {
                let bp = basisPoints(r.1)
                let y = y0 + Double(j) * (barH + gap)
                let bw = plotW * Double(min(bp, 10_000)) / 10_000
                svg +=
                    "<rect x=\"\(n(left))\" y=\"\(n(y))\" width=\"\(n(plotW))\" height=\"\(n(barH))\" class=\"track\"/>"
                svg += "<rect x=\"\(n(left))\" y=\"\(n(y))\" width=\"\(n(bw))\" height=\"\(n(barH))\" fill=\"\(r.2)\" "
                svg += "rx=\"2\"><title>\(esc(g.group)) \(r.0): \(esc(r.1))</title></rect>"
                svg += "<text x=\"\(n(left + plotW + 6))\" y=\"\(n(y + barH - 3))\" class=\"val\">"
                svg += "\(percentText(bp))</text>"
            }
        }
        svg += "<text x=\"\(n(left + plotW / 2))\" y=\"\(n(h - 4))\" class=\"axis\" text-anchor=\"middle\">"
        svg += "share (%)</text>"
        return svg + "</svg>"
    }

    /// Horizontal bars per channel: p95 (light, behind) and p50 (dark, in front) of send → delivery.
    static func latency(_ channels: [StatsGroup]) -> String {
        guard !channels.isEmpty else { return empty() }
        let (left, right, top) = (72.0, 150.0, 8.0)
        let (rowH, gap) = (22.0, 14.0)
        let w = 540.0
        let plotW = w - left - right
        let plotH = Double(channels.count) * rowH + Double(channels.count - 1) * gap
        let h = top + plotH + 40
        let highest = channels.map { max($0.p50DeliveryMs, $0.p95DeliveryMs) }.max() ?? 0
        let scale = countScale(highest)
        var svg = svgOpen(w, h, label: "Send to delivery latency per channel, p50 and p95")
        var tick: Int64 = 0
        while tick <= scale.top {
            let x = left + plotW * Double(tick) / Double(scale.top)
            svg +=
                "<line x1=\"\(n(x))\" y1=\"\(n(top - 4))\" x2=\"\(n(x))\" y2=\"\(n(top + plotH + 4))\" class=\"grid\"/>"
            svg += "<text x=\"\(n(x))\" y=\"\(n(top + plotH + 18))\" class=\"tick\" text-anchor=\"middle\">"
            svg += "\(duration(tick))</text>"
            tick += scale.step
        }
        for (i, g) in channels.enumerated() {
            let y = top + Double(i) * (rowH + gap)
            svg += "<text x=\"\(n(left - 8))\" y=\"\(n(y + rowH / 2 + 4))\" class=\"cat\" "
            svg += "text-anchor=\"end\">\(esc(g.group))</text>"
            guard g.delivered > 0 else {
                svg += "<text x=\"\(n(left + 4))\" y=\"\(n(y + rowH / 2 + 4))\" class=\"note\">"
                svg += "no delivery receipts</text>"
                continue
            }
            let w95 = plotW * Double(g.p95DeliveryMs) / Double(scale.top)
            let w50 = plotW * Double(g.p50DeliveryMs) / Double(scale.top)
            svg += "<rect x=\"\(n(left))\" y=\"\(n(y))\" width=\"\(n(max(w95, 1.5)))\" height=\"\(n(rowH))\" "
            svg += "fill=\"\(p95Colour)\" rx=\"2\"><title>\(esc(g.group)) p95: \(g.p95DeliveryMs) ms</title></rect>"
            svg += "<rect x=\"\(n(left))\" y=\"\(n(y + 5))\" width=\"\(n(max(w50, 1.5)))\" height=\"\(n(rowH - 10))\" "
            svg += "fill=\"\(p50Colour)\" rx=\"2\"><title>\(esc(g.group)) p50: \(g.p50DeliveryMs) ms</title></rect>"
            svg += "<text x=\"\(n(left + plotW + 8))\" y=\"\(n(y + rowH / 2 + 4))\" class=\"val\">"
            svg += "p50 \(duration(g.p50DeliveryMs)) · p95 \(duration(g.p95DeliveryMs))</text>"
        }
        svg += "<text x=\"\(n(left + plotW / 2))\" y=\"\(n(h - 4))\" class=\"axis\" text-anchor=\"middle\">"
        svg += "send → first delivery receipt</text>"
        return svg + "</svg>"
    }

    /// The statuses in the paths, in a fixed order (the ending ones that matter most first).
    static func orderedStatuses(_ paths: [PathFigures]) -> [String] {
        let present = Set(paths.map(\.status))
        let known = statusOrder.filter(present.contains)
        return known + present.subtracting(statusOrder).sorted()
    }

    /// Horizontal stacked bars: one per path, the most taken first, split by final status.
    static func paths(_ paths: [PathFigures], statuses: [String]) -> String {
        guard !paths.isEmpty else { return empty() }
        var totals: [String: Int64] = [:]
        var byStatus: [String: [String: Int64]] = [:]
        for p in paths {
            totals[p.path, default: 0] += p.sessions
            byStatus[p.path, default: [:]][p.status, default: 0] += p.sessions
        }
        let all = totals.keys.sorted {
            let (a, b) = (totals[$0, default: 0], totals[$1, default: 0])
            return a != b ? a > b : $0 < $1
        }
        let shown = Array(all.prefix(maxPaths))
        let labels = shown.map { $0.split(separator: ">").joined(separator: " → ") }
        let longest = labels.map(\.count).max() ?? 0
        let left = min(220, max(72, Double(longest) * 7 + 14))
        let (right, top, rowH, gap) = (44.0, 8.0, 20.0, 10.0)
        let w = 540.0
        let plotW = w - left - right
        let plotH = Double(shown.count) * rowH + Double(shown.count - 1) * gap
        let h = top + plotH + 40
        let scale = countScale(shown.compactMap { totals[$0] }.max() ?? 0)
        var svg = svgOpen(w, h, label: "Fallback paths and how they ended")
        var tick: Int64 = 0
        while tick <= scale.top {
            let x = left + plotW * Double(tick) / Double(scale.top)
            svg +=
                "<line x1=\"\(n(x))\" y1=\"\(n(top - 4))\" x2=\"\(n(x))\" y2=\"\(n(top + plotH + 4))\" class=\"grid\"/>"
            svg += "<text x=\"\(n(x))\" y=\"\(n(top + plotH + 18))\" class=\"tick\" text-anchor=\"middle\">"
            svg += "\(grouped(tick))</text>"
            tick += scale.step
        }
        for (i, path) in shown.enumerated() {
            let y = top + Double(i) * (rowH + gap)
            svg += "<text x=\"\(n(left - 8))\" y=\"\(n(y + rowH / 2 + 4))\" class=\"cat\" text-anchor=\"end\" "
            svg += "data-path=\"\(esc(path))\">\(esc(labels[i]))</text>"
            var x = left
            let counts = byStatus[path] ?? [:]
            for status in statuses {
                guard let c = counts[status], c > 0 else { continue }
                let sw = plotW * Double(c) / Double(scale.top)
                svg += "<rect x=\"\(n(x))\" y=\"\(n(y))\" width=\"\(n(sw))\" height=\"\(n(rowH))\" "
                svg += "fill=\"\(statusColour(status))\" stroke=\"#fff\" stroke-width=\"1\">"
                svg += "<title>\(esc(labels[i])): \(c) \(esc(status))</title></rect>"
                if sw >= 22 {
                    svg += "<text x=\"\(n(x + sw / 2))\" y=\"\(n(y + rowH / 2 + 4))\" class=\"inbar\" "
                    svg += "text-anchor=\"middle\" fill=\"\(statusInk(status))\">\(grouped(c))</text>"
                }
                x += sw
            }
            svg += "<text x=\"\(n(x + 6))\" y=\"\(n(y + rowH / 2 + 4))\" class=\"val\">"
            svg += "\(grouped(totals[path] ?? 0))</text>"
        }
        svg += "<text x=\"\(n(left + plotW / 2))\" y=\"\(n(h - 4))\" class=\"axis\" text-anchor=\"middle\">"
        svg += "sessions</text>"
        svg += "</svg>"
        if all.count > shown.count {
            svg += "<p class=\"sub\">and \(all.count - shown.count) more paths, fewer sessions each.</p>"
        }
        return svg
    }

    /// Grouped bars per hour over the last 24 hours: issued, delivered, verified.
    static func hours(_ hours: [HourFigures]) -> String {
        let total = hours.reduce(Int64(0)) { $0 + $1.issued + $1.sent + $1.delivered + $1.verified + $1.failed }
        guard !hours.isEmpty, total > 0 else { return empty() }
        let (w, h) = (1140.0, 250.0)
        let (left, right, top, bottom) = (52.0, 8.0, 20.0, 42.0)
        let plotW = w - left - right
        let plotH = h - top - bottom
        let series: [(String, KeyPath<HourFigures, Int64>, String)] = [
            ("issued", \.issued, issuedColour), ("delivered", \.delivered, deliveredColour),
            ("verified", \.verified, verifiedColour),
        ]
        let highest = hours.flatMap { hour in series.map { hour[keyPath: $0.1] } }.max() ?? 0
        let scale = countScale(highest)
        var svg = svgOpen(w, h, label: "Sessions issued, delivered and verified per hour, last 24 hours")
        svg += yAxis(scale, left: left, top: top, plotW: plotW, plotH: plotH, format: grouped)
        let band = plotW / Double(hours.count)
        let barW = min(14, band * 0.8 / Double(series.count))
        let groupW = barW * Double(series.count)
        for (i, hour) in hours.enumerated() {
            let x0 = left + band * Double(i) + (band - groupW) / 2
            let label = hourLabel(hour.hour)
            if i % 2 == (hours.count - 1) % 2 || hours.count <= 12 {
                svg += "<text x=\"\(n(left + band * (Double(i) + 0.5)))\" y=\"\(n(top + plotH + 16))\" "
                svg += "class=\"tick\" text-anchor=\"middle\">\(label)</text>"
            }
            for (j, s) in series.enumerated() {
                let v = hour[keyPath: s.1]
                guard v > 0 else { continue }
                let bh = plotH * Double(v) / Double(scale.top)
                let x = x0 + barW * Double(j)
                svg += "<rect x=\"\(n(x + 0.5))\" y=\"\(n(top + plotH - bh))\" width=\"\(n(barW - 1))\" "
                svg += "height=\"\(n(bh))\" fill=\"\(s.2)\" rx=\"1.5\"><title>\(label) UTC \(s.0): \(v)</title></rect>"
            }
        }
        svg += "<text x=\"\(n(left + plotW / 2))\" y=\"\(n(h - 4))\" class=\"axis\" text-anchor=\"middle\">"
        svg += "hour of issue (UTC)</text>"
        svg += "<text x=\"12\" y=\"\(n(top + plotH / 2))\" class=\"axis\" text-anchor=\"middle\" "
        svg += "transform=\"rotate(-90 12 \(n(top + plotH / 2)))\">count</text>"
        return svg + "</svg>"
    }

    /// Every STATS key of every group, each cell marked `data-channel` and `data-key`.
    static func table(_ channels: [StatsGroup]) -> String {
        guard !channels.isEmpty else { return empty() }
        var out = "<div class=\"scroll\"><table data-stats=\"SINCE 86400 BY channel\"><thead><tr>"
        for key in statsKeys { out += "<th scope=\"col\">\(esc(key))</th>" }
        out += "</tr></thead><tbody>"
        for g in channels {
            let c = esc(g.group)
            out += "<tr data-channel=\"\(c)\">"
            for field in g.fields {
                let value = field.value.text
                let tag = field.key == "group" ? "th scope=\"row\"" : "td"
                let close = field.key == "group" ? "th" : "td"
                out += "<\(tag) data-channel=\"\(c)\" data-key=\"\(field.key)\">\(esc(value))</\(close)>"
            }
            out += "</tr>"
        }
        return out + "</tbody></table></div>"
    }

    // MARK: Drawing helpers

    static func svgOpen(_ w: Double, _ h: Double, label: String) -> String {
        "<svg viewBox=\"0 0 \(n(w)) \(n(h))\" width=\"\(n(w))\" height=\"\(n(h))\" role=\"img\" "
            + "aria-label=\"\(esc(label))\">"
    }

    /// Horizontal grid lines with their tick labels, from 0 to the scale's top.
    static func yAxis(
        _ scale: (top: Int64, step: Int64),
        left: Double,
        top: Double,
        plotW: Double,
        plotH: Double,
        format: (Int64) -> String
    ) -> String {
        var out = ""
        var tick: Int64 = 0
        while tick <= scale.top {
            let y = top + plotH - plotH * Double(tick) / Double(scale.top)
            out += "<line x1=\"\(n(left))\" y1=\"\(n(y))\" x2=\"\(n(left + plotW))\" y2=\"\(n(y))\" "
            out += "class=\"\(tick == 0 ? "base" : "grid")\"/>"
            out +=
                "<text x=\"\(n(left - 6))\" y=\"\(n(y + 4))\" class=\"tick\" text-anchor=\"end\">\(format(tick))</text>"
            tick += scale.step
        }
        return out
    }

    /// A scale from 0 with at most 4 steps of 1, 2 or 5 × 10ⁿ covering `highest` (at least 1).
    static func countScale(_ highest: Int64) -> (top: Int64, step: Int64) {
        let m = max(highest, 1)
        var magnitude: Int64 = 1
        while magnitude < Int64.max / 100 {
            for f: Int64 in [1, 2, 5] {
                let step = f * magnitude
                if m <= step * 4 { return ((m + step - 1) / step * step, step) }
            }
            magnitude *= 10
        }
        return (m, m)
    }

    // MARK: Text helpers

    /// HTML-escapes a text (for element content and quoted attributes alike).
    static func esc(_ s: String) -> String { TemplateText.escapeHTML(s) }

    /// A coordinate with at most one decimal, without locale or float noise.
    static func n(_ x: Double) -> String {
        guard x.isFinite else { return "0" }
        let tenths = Int((abs(x) * 10).rounded())
        let sign = x < 0 && tenths != 0 ? "-" : ""
        return sign + String(tenths / 10) + (tenths % 10 == 0 ? "" : "." + String(tenths % 10))
    }

    /// 12345 → `12,345`.
    static func grouped(_ v: Int64) -> String {
        let digits = String(v.magnitude)
        var out = ""
        for (i, ch) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(ch)
        }
        return (v < 0 ? "-" : "") + out
    }

    /// STATS' four-decimal rate (`0.9512`) in basis points (9512); 0 for anything else.
    static func basisPoints(_ rate: String) -> Int {
        let parts = rate.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let whole = Int(parts[0]), parts[1].count == 4, let frac = Int(parts[1]) else {
            return 0
        }
        return whole * 10_000 + frac
    }

    /// Basis points as a percentage with one decimal: 9512 → `95.1%`.
    static func percentText(_ bp: Int) -> String {
        let tenths = (bp + 5) / 10
        return "\(tenths / 10).\(tenths % 10)%"
    }

    /// n ÷ d as a percentage with one decimal, `–` when d is 0.
    static func percent(_ n: Int64, _ d: Int64) -> String {
        guard d > 0 else { return "–" }
        return percentText(Int((n * 10_000 + d / 2) / d))
    }

    /// Milliseconds for people: `850 ms`, `1.2 s`, `2.5 min`.
    static func duration(_ ms: Int64) -> String {
        if ms == 0 { return "0" }
        if ms < 1_000 { return "\(ms) ms" }
        func tenths(_ v: Int64, _ unit: Int64, _ name: String) -> String {
            let t = (v * 10 + unit / 2) / unit
            return "\(t / 10)" + (t % 10 == 0 ? "" : ".\(t % 10)") + " " + name
        }
        if ms < 60_000 { return tenths(ms, 1_000, "s") }
        if ms < 3_600_000 { return tenths(ms, 60_000, "min") }
        return tenths(ms, 3_600_000, "h")
    }

    /// Epoch ms → `2025-03-01 14:05:09 UTC`.
    static func utc(_ ms: Int64) -> String {
        let (date, secondsOfDay) = civil(ms)
        let (h, m, s) = (secondsOfDay / 3_600, secondsOfDay % 3_600 / 60, secondsOfDay % 60)
        return date + " " + pad(h) + ":" + pad(m) + ":" + pad(s) + " UTC"
    }

    /// Epoch ms → `14:00` (UTC).
    static func hourLabel(_ ms: Int64) -> String {
        let (_, secondsOfDay) = civil(ms)
        return pad(secondsOfDay / 3_600) + ":" + pad(secondsOfDay % 3_600 / 60)
    }

    static func pad(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }

    /// The UTC date `YYYY-MM-DD` and the seconds into that day (Howard Hinnant's days-to-civil).
    static func civil(_ ms: Int64) -> (String, Int64) {
        let seconds = ms >= 0 ? ms / 1_000 : (ms - 999) / 1_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondsOfDay = seconds - days * 86_400
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        return ("\(y)-\(pad(m))-\(pad(d))", secondsOfDay)
    }

    // MARK: Look

    /// The most paths drawn; the rest are counted below the chart.
    static let maxPaths = 12

    // Okabe & Ito's colour-blind-safe palette.
    static let issuedColour = "#0072B2"
    static let sentColour = "#56B4E9"
    static let deliveredColour = "#009E73"
    static let verifiedColour = "#E69F00"
    static let p50Colour = "#882E72"
    static let p95Colour = "#D9B8D0"

    static let statusOrder = [
        "verified", "delivered", "sent", "pending", "expired", "exhausted", "locked", "cancelled",
    ]

    static func statusColour(_ status: String) -> String {
        switch status {
        case "verified": "#009E73"
        case "delivered": "#0072B2"
        case "sent": "#56B4E9"
        case "pending": "#A6CEE3"
        case "expired": "#E69F00"
        case "exhausted": "#D55E00"
        case "locked": "#CC79A7"
        case "cancelled": "#8C8C8C"
        default: "#4D4D4D"
        }
    }

    /// The text colour on a status's bar: dark on the light fills, white on the dark ones.
    static func statusInk(_ status: String) -> String {
        switch status {
        case "sent", "pending", "expired": "#1D2330"
        default: "#FFFFFF"
        }
    }

    static let css = """
        :root{--ink:#1d2330;--muted:#5b6475;--line:#e2e5ea;--bg:#f4f5f7}
        *{box-sizing:border-box}
        html{background:var(--bg)}
        body{margin:0;color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",\
        "Liberation Sans",Arial,sans-serif;-webkit-font-smoothing:antialiased}
        .wrap{max-width:1200px;margin:0 auto;padding:0 24px}
        header{background:#1d2330;color:#fff}
        header .wrap{display:flex;align-items:center;justify-content:space-between;padding-top:18px;padding-bottom:18px}
        h1{font-size:20px;margin:0;font-weight:650;letter-spacing:.2px}
        h1 span{font-weight:400;color:#aeb6c6}
        .meta{margin:4px 0 0;color:#c9cfdb;font-size:13px}
        .meta strong{color:#fff}
        a.json{color:#fff;border:1px solid #5b6475;border-radius:6px;padding:5px 12px;text-decoration:none;font-size:13px}
        main.wrap{padding-top:20px;padding-bottom:28px}
        .kpis{display:grid;grid-template-columns:repeat(7,1fr);gap:12px}
        .kpi{background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px 14px}
        .kpi .k{color:var(--muted);font-size:12.5px;white-space:nowrap}
        .kpi .v{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums;margin-top:2px}
        .grid{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-top:16px}
        .card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 18px;min-width:0}
        .card.wide{grid-column:1/-1}
        h2{font-size:15px;margin:0 0 2px;font-weight:650}
        .sub{color:var(--muted);font-size:12.5px;margin:0 0 10px}
        .legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12.5px;color:var(--muted);margin-bottom:8px}
        .sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px}
        svg{display:block;width:100%;height:auto;overflow:visible}
        svg text{font-family:inherit;fill:var(--ink)}
        svg .tick{font-size:11px;fill:var(--muted)}
        svg .axis{font-size:11.5px;fill:var(--muted)}
        svg .cat{font-size:12.5px;font-weight:600}
        svg .val{font-size:11px;font-variant-numeric:tabular-nums}
        svg .inbar{font-size:11px;font-weight:600}
        svg .note{font-size:12px;fill:var(--muted);font-style:italic}
        svg .grid{stroke:#e9ecf1;stroke-width:1}
        svg .base{stroke:#9aa3b2;stroke-width:1}
        svg .track{fill:#f0f2f5}
        .empty{color:var(--muted);background:#fafbfc;border:1px dashed var(--line);border-radius:8px;padding:28px;\
        text-align:center;margin:4px 0 0}
        .scroll{overflow-x:auto}
        table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:12.5px}
        th,td{padding:7px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
        thead th{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:11px;font-weight:600;\
        color:var(--muted);border-bottom:2px solid var(--line)}
        tbody th{text-align:left;font-weight:650}
        thead th:first-child{text-align:left}
        tbody tr:hover{background:#f7f8fa}
        footer{color:var(--muted);font-size:12px;margin-top:18px;text-align:center}
        footer a{color:var(--muted)}
        @media (max-width:900px){.grid{grid-template-columns:1fr}.kpis{grid-template-columns:repeat(2,1fr)}}
        """
}
