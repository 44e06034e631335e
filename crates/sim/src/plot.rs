//! Line charts as SVG (written here, deterministic) and PNG (the SVG rasterised by resvg):
//! axes with ticks and units, one line per series, optional confidence bands, a legend.

use std::fmt::Write as _;

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its legend entry.
    pub label: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// A band around the line (low, high per point), e.g. a 95% confidence interval.
    pub band: Option<Vec<(f64, f64)>>,
    /// Drawn dashed (models and controls), or solid (measurements).
    pub dashed: bool,
}

/// A chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis label, with its unit.
    pub x_label: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
}

const W: f64 = 760.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 64.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];
const FONT: &str = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif";

/// Ticks at 1, 2 or 5 × 10^k covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Chart {
    fn bounds(&self) -> (f64, f64, f64, f64) {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for s in &self.series {
            for (x, y) in &s.points {
                xs.push(*x);
                ys.push(*y);
            }
            for (lo, hi) in s.band.iter().flatten() {
                ys.push(*lo);
                ys.push(*hi);
            }
        }
        let finite = |v: &Vec<f64>, f: fn(f64, f64) -> f64, start: f64| {
            v.iter().copied().filter(|x| x.is_finite()).fold(start, f)
        };
        let (x0, x1) = (
            finite(&xs, f64::min, f64::INFINITY),
            finite(&xs, f64::max, f64::NEG_INFINITY),
        );
        let (y0, y1) = (
            finite(&ys, f64::min, f64::INFINITY).min(0.0),
            finite(&ys, f64::max, f64::NEG_INFINITY),
        );
        let fix = |a: f64, b: f64| {
            if !a.is_finite() || !b.is_finite() {
                (0.0, 1.0)
            } else if b - a < 1e-12 {
                (a, a + 1.0)
            } else {
                (a, b)
            }
        };
        let (x0, x1) = fix(x0, x1);
        let (y0, y1) = fix(y0, y1 * 1.05);
        (x0, x1, y0, y1)
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let (x0, x1, y0, y1) = self.bounds();
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
        let mut o = String::new();
        let _ = write!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="{FONT}">"#
        );
        let _ = write!(o, r##"<rect width="{W}" height="{H}" fill="#ffffff"/>"##);
        let _ = write!(
            o,
            r#"<text x="{}" y="26" font-size="16" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        for t in ticks(x0, x1, 8) {
            let x = sx(t);
            let _ = write!(
                o,
                r##"<line x1="{x:.2}" y1="{TOP}" x2="{x:.2}" y2="{:.2}" stroke="#e5e5e5"/><text x="{x:.2}" y="{:.2}" font-size="12" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 18.0,
                label(t)
            );
        }
        for t in ticks(y0, y1, 6) {
            let y = sy(t);
            let _ = write!(
                o,
                r##"<line x1="{LEFT}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#e5e5e5"/><text x="{:.2}" y="{:.2}" font-size="12" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 8.0,
                y + 4.0,
                label(t)
            );
        }
        let _ = write!(
            o,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333333"/>"##
        );
        let _ = write!(
            o,
            r#"<text x="{:.2}" y="{:.2}" font-size="13" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 18.0,
            escape(&self.x_label)
        );
        let _ = write!(
            o,
            r#"<text x="20" y="{:.2}" font-size="13" text-anchor="middle" transform="rotate(-90 20 {:.2})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS.get(i % COLORS.len()).copied().unwrap_or("#000000");
            if let Some(band) = &s.band {
                let upper = s
                    .points
                    .iter()
                    .zip(band)
                    .map(|((x, _), (_, hi))| format!("{:.2},{:.2}", sx(*x), sy(*hi)));
                let lower = s
                    .points
                    .iter()
                    .zip(band)
                    .rev()
                    .map(|((x, _), (lo, _))| format!("{:.2},{:.2}", sx(*x), sy(*lo)));
                let pts: Vec<String> = upper.chain(lower).collect();
                let _ = write!(
                    o,
                    r#"<polygon points="{}" fill="{color}" fill-opacity="0.18" stroke="none"/>"#,
                    pts.join(" ")
                );
            }
            let pts: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| format!("{:.2},{:.2}", sx(*x), sy(*y)))
                .collect();
            let dash = if s.dashed {
                r#" stroke-dasharray="7 4""#
            } else {
                ""
            };
            let _ = write!(
                o,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                pts.join(" ")
            );
            let ly = TOP + 12.0 + i as f64 * 22.0;
            let lx = W - RIGHT + 16.0;
            let _ = write!(
                o,
                r#"<line x1="{lx}" y1="{ly}" x2="{:.2}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.2}" y="{:.2}" font-size="12">{}</text>"#,
                lx + 28.0,
                lx + 34.0,
                ly + 4.0,
                escape(&s.label)
            );
        }
        o.push_str("</svg>\n");
        o
    }
}

/// A chart that cannot be rasterised.
#[derive(Debug, thiserror::Error)]
#[error("rendering the plot: {0}")]
pub struct RenderError(String);

/// Rasterises an SVG document to PNG bytes, with the system's fonts for its text.
pub fn to_png(svg: &str) -> Result<Vec<u8>, RenderError> {
    use resvg::{tiny_skia, usvg};
    let mut fonts = usvg::fontdb::Database::new();
    fonts.load_system_fonts();
    if fonts.is_empty() {
        tracing_free_warning();
    }
    let options = usvg::Options {
        fontdb: std::sync::Arc::new(fonts),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| RenderError(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| RenderError("empty image".into()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| RenderError(e.to_string()))
}

fn tracing_free_warning() {
    eprintln!(
        "warning: no system fonts found: PNG plots will have no text (the SVGs have it); install fonts-dejavu-core"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 100.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(
            ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert!(ticks(3.0, 3.0, 5).len() <= 1);
    }

    #[test]
    fn a_chart_has_its_axes_legend_and_lines_and_rasterises() {
        let chart = Chart {
            title: "t <1>".into(),
            x_label: "shared rules (count)".into(),
            y_label: "vulnerability (probability)".into(),
            series: vec![Series {
                label: "λ = 0.2".into(),
                points: vec![(0.0, 0.2), (1.0, 0.1), (2.0, 0.05)],
                band: Some(vec![(0.1, 0.3), (0.05, 0.15), (0.0, 0.1)]),
                dashed: true,
            }],
        };
        let svg = chart.to_svg();
        for needle in [
            "shared rules (count)",
            "vulnerability (probability)",
            "λ = 0.2",
            "t &lt;1&gt;",
            "<polyline",
            "<polygon",
            "stroke-dasharray",
        ] {
            assert!(svg.contains(needle), "{needle}");
        }
        assert_eq!(svg, chart.to_svg(), "deterministic");
        let png = to_png(&svg).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
