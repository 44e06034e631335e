//! The paper's evaluation (Section VI): Figures 4–6 recomputed from explicit models
//! ([`paper`]), the same experiment run on SecNet's real contract and detectors
//! ([`emulate`]), plots ([`plot`]) and a report that sets them side by side ([`report`]).

pub mod emulate;
pub mod paper;
pub mod plot;
pub mod report;

use paper::{Params, Row};
use plot::{Chart, Series};
use std::path::{Path, PathBuf};

/// One of the paper's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Vulnerability against shared rules, per security factor λ.
    Fig4,
    /// Revenue against shared rules, per quality level α_q.
    Fig5,
    /// Revenue against shared rules, per price level α_p.
    Fig6,
}

impl Figure {
    /// File stem (`fig4`, …).
    pub fn name(self) -> &'static str {
        match self {
            Figure::Fig4 => "fig4",
            Figure::Fig5 => "fig5",
            Figure::Fig6 => "fig6",
        }
    }

    /// The CSV header.
    pub fn header(self) -> &'static str {
        match self {
            Figure::Fig4 => "lambda,shared_rules,vulnerability",
            Figure::Fig5 => "quality,shared_rules,revenue",
            Figure::Fig6 => "price_level,shared_rules,revenue",
        }
    }

    /// The rows, from the model.
    pub fn rows(self, p: &Params) -> Vec<Row> {
        match self {
            Figure::Fig4 => paper::fig4(p),
            Figure::Fig5 => paper::fig5(p),
            Figure::Fig6 => paper::fig6(p),
        }
    }

    /// The chart of `rows`.
    pub fn chart(self, rows: &[Row]) -> Chart {
        let (title, y_label, symbol) = match self {
            Figure::Fig4 => (
                "Figure 4 (model): vulnerability of SecNet to DDoS",
                "P(attacked in a period) (probability)",
                "λ",
            ),
            Figure::Fig5 => (
                "Figure 5 (model): revenue by rule quality",
                "contributor revenue (units of fair rule value)",
                "α_q",
            ),
            Figure::Fig6 => (
                "Figure 6 (model): revenue by rule price",
                "contributor revenue (units of fair rule value)",
                "α_p",
            ),
        };
        let mut parameters: Vec<f64> = rows.iter().map(|r| r.parameter).collect();
        parameters.dedup();
        Chart {
            title: title.into(),
            x_label: "shared security rules (count)".into(),
            y_label: y_label.into(),
            series: parameters
                .iter()
                .map(|p| Series {
                    label: format!("{symbol} = {p}"),
                    points: rows
                        .iter()
                        .filter(|r| r.parameter == *p)
                        .map(|r| (f64::from(r.shared_rules), r.value))
                        .collect(),
                    band: None,
                    dashed: false,
                })
                .collect(),
        }
    }
}

/// A failure writing results.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A plot.
    #[error(transparent)]
    Render(#[from] plot::RenderError),
    /// The emulation.
    #[error("{0}")]
    Emulation(String),
}

/// Writes `contents` to `path`, saying which file failed.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), SimError> {
    std::fs::write(path, contents).map_err(|source| SimError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a chart as `<stem>.svg` and `<stem>.png`.
pub fn write_chart(dir: &Path, stem: &str, chart: &Chart) -> Result<(), SimError> {
    let svg = chart.to_svg();
    write(&dir.join(format!("{stem}.svg")), &svg)?;
    write(&dir.join(format!("{stem}.png")), plot::to_png(&svg)?)
}

/// The CSV of a figure's rows.
pub fn csv(figure: Figure, rows: &[Row]) -> String {
    let mut out = String::from(figure.header());
    out.push('\n');
    for r in rows {
        out.push_str(&format!("{},{},{}\n", r.parameter, r.shared_rules, r.value));
    }
    out
}

/// Recomputes a figure into `dir`: `<fig>.csv`, `<fig>.svg`, `<fig>.png` and `model.md`
/// (the formulas and parameters). Returns the files written.
pub fn write_figure(figure: Figure, p: &Params, dir: &Path) -> Result<Vec<PathBuf>, SimError> {
    std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let rows = figure.rows(p);
    let name = figure.name();
    write(&dir.join(format!("{name}.csv")), csv(figure, &rows))?;
    write_chart(dir, name, &figure.chart(&rows))?;
    write(&dir.join("model.md"), report::model_text(p))?;
    Ok(["csv", "svg", "png"]
        .iter()
        .map(|e| dir.join(format!("{name}.{e}")))
        .chain([dir.join("model.md")])
        .collect())
}
