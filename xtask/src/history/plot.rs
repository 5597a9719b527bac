//! `history --plot`: build time per image over runs, as a hand-written SVG; and the same frame,
//! axes and legend for any x/y chart ([`xy_svg`]: `bench --scenarios scale`'s growth). Pure.

use std::fmt::Write as _;

use super::Record;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// One series per image (`<g class="series" data-image=...>`), x the run, y its wall time; a
/// filled dot where the cargo step ran, a hollow one where it was cached (or the image was up to
/// date), a cross where the build failed.
pub fn svg(records: &[Record]) -> String {
    let mut images: Vec<&str> = Vec::new();
    for r in records {
        for i in &r.images {
            if !images.contains(&i.image.as_str()) {
                images.push(&i.image);
            }
        }
    }
    let max = (records.iter())
        .flat_map(|r| r.images.iter().map(|i| i.wall_seconds))
        .fold(0.0_f64, f64::max);
    let n = records.len();
    let frame = Frame {
        x_min: 0.0,
        x_max: n.saturating_sub(1) as f64,
        top: nice_ceiling(max),
        unit: Unit::Seconds,
    };
    let mut out = open(&format!(
        "docker-build wall time per image, last {n} run{}",
        if n == 1 { "" } else { "s" }
    ));
    let step = (n / 10).max(1);
    let ticks: Vec<(f64, String)> = (0..n)
        .step_by(step)
        .map(|i| (i as f64, (i + 1).to_string()))
        .collect();
    axes(
        &mut out,
        &frame,
        &ticks,
        "run (oldest to newest)",
        "seconds",
    );
    for (k, image) in images.iter().enumerate() {
        series(&mut out, &frame, COLORS[k % COLORS.len()], image, records);
    }
    legend(&mut out, &images);
    out.push_str("</svg>\n");
    out
}

/// What the y axis counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
}

/// An SVG's opening: its size, a white background, `title` on top.
fn open(title: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    out
}

/// The plot area: `x_min` to `x_max` across, 0 to `top` (in `unit`) up.
struct Frame {
    x_min: f64,
    x_max: f64,
    top: f64,
    unit: Unit,
}

const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

impl Frame {
    fn x(&self, i: usize) -> f64 {
        self.xf(i as f64)
    }

    fn xf(&self, x: f64) -> f64 {
        if self.x_max <= self.x_min {
            return LEFT + PLOT_W / 2.0;
        }
        LEFT + PLOT_W * (x - self.x_min) / (self.x_max - self.x_min)
    }

    fn y(&self, value: f64) -> f64 {
        TOP + PLOT_H * (1.0 - value / self.top)
    }

    fn label(&self, value: f64) -> String {
        match self.unit {
            Unit::Seconds => label(value),
            Unit::Bytes if self.top >= 2e9 => format!("{:.1} GB", value / 1e9),
            Unit::Bytes => format!("{:.0} MB", value / 1e6),
        }
    }
}

/// The axes, the grid with its values, the x ticks and the axes' names.
fn axes(out: &mut String, frame: &Frame, ticks: &[(f64, String)], x_name: &str, y_name: &str) {
    let _ = writeln!(out, r##"<g class="axes" stroke="#333">"##);
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}"/>"#,
        TOP + PLOT_H
    );
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{b}" x2="{}" y2="{b}"/>"#,
        LEFT + PLOT_W,
        b = TOP + PLOT_H
    );
    let _ = writeln!(out, "</g>");
    for k in 0..=4 {
        let s = frame.top * k as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + PLOT_W,
            LEFT - 6.0,
            frame.y(s) + 4.0,
            frame.label(s),
            yy = frame.y(s)
        );
    }
    for (x, text) in ticks {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            frame.xf(*x),
            TOP + PLOT_H + 16.0,
            escape(text)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + PLOT_W / 2.0,
        HEIGHT - 12.0,
        escape(x_name)
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0,
        escape(y_name)
    );
}

/// One line of an x/y chart: its name and its points (x, y, the point's tooltip).
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, String)>,
}

/// An x/y chart with the same frame, axes and legend as `history --plot`: one line per series
/// (`<g class="series" data-series=...>`), a dot per point, x ticks at every x of a point.
pub fn xy_svg(title: &str, x_name: &str, y_name: &str, unit: Unit, series: &[Series]) -> String {
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_min = xs().fold(f64::INFINITY, f64::min);
    let x_max = xs().fold(f64::NEG_INFINITY, f64::max);
    let max = (series.iter())
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let top = match unit {
        Unit::Seconds => nice_ceiling(max),
        Unit::Bytes => nice_ceiling(max / 1e6) * 1e6,
    };
    let frame = Frame {
        x_min: if x_min.is_finite() { x_min } else { 0.0 },
        x_max: if x_max.is_finite() { x_max } else { 0.0 },
        top,
        unit,
    };
    let mut ticks: Vec<f64> = xs().collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let ticks: Vec<(f64, String)> = ticks.into_iter().map(|x| (x, format!("{x}"))).collect();
    let mut out = open(title);
    axes(&mut out, &frame, &ticks, x_name, y_name);
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let _ = writeln!(
            out,
            r#"<g class="series" data-series="{}" stroke="{color}" fill="{color}">"#,
            escape(&s.name)
        );
        let path: Vec<String> = (s.points.iter())
            .map(|(x, y, _)| format!("{:.1},{:.1}", frame.xf(*x), frame.y(*y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y, title) in &s.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4"><title>{}</title></circle>"#,
                frame.xf(*x),
                frame.y(*y),
                escape(title)
            );
        }
        let _ = writeln!(out, "</g>");
    }
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    legend_lines(&mut out, &names);
    out.push_str("</svg>\n");
    out
}

/// Several charts stacked in one SVG, each at its own height.
pub fn stack(charts: &[String]) -> String {
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" viewBox="0 0 {WIDTH} {}">"#,
        HEIGHT * charts.len() as f64,
        HEIGHT * charts.len() as f64
    );
    out.push('\n');
    for (k, chart) in charts.iter().enumerate() {
        let inner = chart.replacen("<svg ", &format!(r#"<svg y="{}" "#, HEIGHT * k as f64), 1);
        out.push_str(&inner);
    }
    out.push_str("</svg>\n");
    out
}

/// One image's line and marks over the runs.
fn series(out: &mut String, frame: &Frame, color: &str, image: &str, records: &[Record]) {
    let points: Vec<(usize, &super::ImageRecord)> = (records.iter().enumerate())
        .filter_map(|(i, r)| r.images.iter().find(|m| m.image == image).map(|m| (i, m)))
        .collect();
    let _ = writeln!(
        out,
        r#"<g class="series" data-image="{}" stroke="{color}" fill="{color}">"#,
        escape(image)
    );
    let path: Vec<String> = (points.iter())
        .map(|(i, m)| format!("{:.1},{:.1}", frame.x(*i), frame.y(m.wall_seconds)))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke-width="1.5" points="{}"/>"#,
        path.join(" ")
    );
    for (i, m) in &points {
        let (cx, cy) = (frame.x(*i), frame.y(m.wall_seconds));
        let title = escape(&format!(
            "{image} run {}: {:.1}s, {}, cargo {}",
            i + 1,
            m.wall_seconds,
            m.result,
            m.cargo_step
        ));
        let _ = if !m.succeeded() {
            writeln!(
                out,
                r#"<path d="M{:.1},{:.1} l8,8 m0,-8 l-8,8" stroke-width="2"><title>{title}</title></path>"#,
                cx - 4.0,
                cy - 4.0,
            )
        } else if m.ran() {
            writeln!(
                out,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="4"><title>{title}</title></circle>"#
            )
        } else {
            writeln!(
                out,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="white" stroke-width="1.5"><title>{title}</title></circle>"#
            )
        };
    }
    let _ = writeln!(out, "</g>");
}

/// The series' colors.
fn legend_lines(out: &mut String, names: &[&str]) {
    let lx = WIDTH - RIGHT + 20.0;
    let _ = writeln!(out, r#"<g class="legend">"#);
    for (k, name) in names.iter().enumerate() {
        let ly = TOP + 10.0 + 18.0 * k as f64;
        let color = COLORS[k % COLORS.len()];
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(name)
        );
    }
    let _ = writeln!(out, "</g>");
}

/// The images' colors and what the marks mean.
fn legend(out: &mut String, images: &[&str]) {
    legend_lines(out, images);
    let lx = WIDTH - RIGHT + 20.0;
    let _ = writeln!(out, r#"<g class="legend-marks">"#);
    let ly = TOP + 24.0 + 18.0 * images.len() as f64;
    let _ = writeln!(
        out,
        r##"<circle cx="{}" cy="{ly}" r="4" fill="#333"/><text x="{}" y="{}">cargo step ran</text>"##,
        lx + 10.0,
        lx + 26.0,
        ly + 4.0
    );
    let _ = writeln!(
        out,
        r##"<circle cx="{}" cy="{}" r="4" fill="white" stroke="#333" stroke-width="1.5"/><text x="{}" y="{}">cached / up to date</text>"##,
        lx + 10.0,
        ly + 18.0,
        lx + 26.0,
        ly + 22.0
    );
    let _ = writeln!(
        out,
        r##"<path d="M{},{} l8,8 m0,-8 l-8,8" stroke="#333" stroke-width="2"/><text x="{}" y="{}">failed</text>"##,
        lx + 6.0,
        ly + 32.0,
        lx + 26.0,
        ly + 40.0
    );
    let _ = writeln!(out, "</g>");
}

/// 1, 2, 4, 5, 8 x 10^k at or above `v` (at least 1 s): four grid steps stay round numbers.
fn nice_ceiling(v: f64) -> f64 {
    let v = v.max(1.0);
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 4.0, 5.0, 8.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn label(s: f64) -> String {
    if s >= 10.0 || s == s.round() {
        format!("{s:.0}s")
    } else if s < 1.0 && (s * 10.0).fract().abs() > 1e-9 {
        format!("{s:.2}s")
    } else {
        format!("{s:.1}s")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fixtures::{image, record};

    #[test]
    fn well_formed_with_one_series_per_image() {
        let records = vec![
            record(
                1.0,
                vec![
                    image("api", "succeeded", 60.0, "ran"),
                    image("sensor", "succeeded", 50.0, "ran"),
                ],
            ),
            record(
                2.0,
                vec![
                    image("api", "succeeded", 2.0, "cached"),
                    image("sensor", "failed", 3.0, "ran"),
                    image("a<b", "up-to-date", 0.1, "none"),
                ],
            ),
        ];
        let text = svg(&records);
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let series: Vec<&str> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("series"))
            .filter_map(|n| n.attribute("data-image"))
            .collect();
        assert_eq!(series, ["api", "sensor", "a<b"]);
        // api: one filled (ran) and one hollow (cached) marker
        let api = doc
            .descendants()
            .find(|n| n.attribute("data-image") == Some("api"))
            .unwrap();
        let fills: Vec<Option<&str>> = api
            .children()
            .filter(|c| c.has_tag_name("circle"))
            .map(|c| c.attribute("fill"))
            .collect();
        assert_eq!(fills, [None, Some("white")]);
    }

    #[test]
    fn an_xy_chart_has_one_series_per_line_and_a_tick_per_x() {
        let series = vec![
            Series {
                name: "xtask cold".into(),
                points: vec![(8.0, 60.0, "8: 60s".into()), (64.0, 90.0, "64: 90s".into())],
            },
            Series {
                name: "native <cold>".into(),
                points: vec![(8.0, 55.0, String::new()), (32.0, 70.0, String::new())],
            },
        ];
        let text = xy_svg("growth", "images", "seconds", Unit::Seconds, &series);
        let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let names: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("data-series"))
            .collect();
        assert_eq!(names, ["xtask cold", "native <cold>"]);
        let ticks: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .filter(|t| ["8", "32", "64"].contains(t))
            .collect();
        assert_eq!(ticks, ["8", "32", "64"]);
        let bytes = xy_svg("size", "crates", "bytes", Unit::Bytes, &[]);
        let both = stack(&[text, bytes]);
        let doc = roxmltree::Document::parse(&both).expect("well-formed stacked SVG");
        assert_eq!(
            doc.descendants().filter(|n| n.has_tag_name("svg")).count(),
            3
        );
    }

    #[test]
    fn empty_history_still_draws() {
        let doc_text = svg(&[]);
        assert!(roxmltree::Document::parse(&doc_text).is_ok());
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(63.0), 80.0);
        assert_eq!(nice_ceiling(682.0), 800.0);
        assert_eq!(nice_ceiling(8.5), 10.0);
        assert_eq!(nice_ceiling(1.5), 2.0);
    }
}
