//! The throughput chart: an SVG of msg/s per listener, for each batch size and handler (0%
//! duplicates), on a log scale (the listeners span 2 k to 200 k msg/s). Written by hand, not
//! with plotters: plotters lays text out with a font backend (font-kit and the system's
//! fonts), and a chart of bars and labels needs none.

use std::fmt::Write as _;

/// One bar: a listener's msg/s in one group.
pub struct Bar {
    pub listener: &'static str,
    pub msgs_per_s: f64,
}

/// One group of bars: a batch size and handler.
pub struct Group {
    pub title: String,
    pub bars: Vec<Bar>,
}

const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// The chart as an SVG document.
pub fn svg(title: &str, groups: &[Group]) -> String {
    let listeners: Vec<&str> = groups
        .first()
        .map(|g| g.bars.iter().map(|b| b.listener).collect())
        .unwrap_or_default();
    let (bar_w, gap, left, top, plot_h) = (14.0, 26.0, 70.0, 50.0, 300.0);
    let group_w = bar_w * listeners.len() as f64 + gap;
    let width = left + group_w * groups.len() as f64 + 160.0;
    let height = top + plot_h + 60.0;
    // Log scale from 1 k to 1 M msg/s.
    let (lo, hi) = (3.0_f64, 6.0_f64);
    let y = |v: f64| top + plot_h - (v.max(1.0).log10().clamp(lo, hi) - lo) / (hi - lo) * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="24" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for decade in [1_000.0, 10_000.0, 100_000.0, 1_000_000.0] {
        let yy = y(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{:.0}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{} msg/s</text>"##,
            width - 160.0,
            left - 6.0,
            yy + 4.0,
            human(decade)
        );
    }
    for (g, group) in groups.iter().enumerate() {
        let x0 = left + gap / 2.0 + group_w * g as f64;
        for (b, bar) in group.bars.iter().enumerate() {
            let x = x0 + bar_w * b as f64;
            let top_y = y(bar.msgs_per_s);
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{top_y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {:.0} msg/s</title></rect>"#,
                bar_w - 2.0,
                top + plot_h - top_y,
                PALETTE[b % PALETTE.len()],
                escape(&group.title),
                bar.listener,
                bar.msgs_per_s
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x0 + bar_w * group.bars.len() as f64 / 2.0,
            top + plot_h + 18.0,
            escape(&group.title)
        );
    }
    for (i, listener) in listeners.iter().enumerate() {
        let (lx, ly) = (width - 140.0, top + 16.0 * i as f64);
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{ly}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            PALETTE[i % PALETTE.len()],
            lx + 16.0,
            ly + 9.0,
            listener
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The chart of a report's JSON (its `scenarios`, 0% duplicates).
pub fn from_report(report: &serde_json::Value) -> String {
    let rows = report["scenarios"].as_array().cloned().unwrap_or_default();
    let mut groups = Vec::new();
    for (batch, handler) in [
        (1, "trivial"),
        (32, "trivial"),
        (1, "sleep1ms"),
        (32, "sleep1ms"),
    ] {
        let bars = rows
            .iter()
            .filter(|r| {
                r["duplicates_percent"] == 0 && r["batch"] == batch && r["handler"] == handler
            })
            .filter_map(|r| {
                let listener = r["listener"].as_str()?;
                let listener = crate::Kind::ALL
                    .iter()
                    .map(|k| crate::name(*k))
                    .find(|n| *n == listener)?;
                Some(Bar {
                    listener,
                    msgs_per_s: r["msgs_per_s"].as_f64()?,
                })
            })
            .collect();
        groups.push(Group {
            title: format!("batch {batch}, {handler}"),
            bars,
        });
    }
    svg(
        "Consume throughput, msg/s (log scale), 0% duplicates",
        &groups,
    )
}

fn human(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_grow_with_throughput_and_the_document_is_closed() {
        let groups = vec![Group {
            title: "batch 1, trivial".into(),
            bars: vec![
                Bar {
                    listener: "plain",
                    msgs_per_s: 80_000.0,
                },
                Bar {
                    listener: "redis",
                    msgs_per_s: 16_000.0,
                },
            ],
        }];
        let svg = svg("msg/s", &groups);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        let heights: Vec<f64> = svg
            .lines()
            .filter(|l| l.contains("<title>"))
            .filter_map(|l| l.split("height=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(heights.len(), 2);
        assert!(heights[0] > heights[1], "{heights:?}");
    }
}
