//! `secnet sim`: the paper's evaluation (Section VI). `fig4 | fig5 | fig6` recompute its
//! figures from explicit models; `rules` measures the same experiment on the real contract
//! and detectors and writes a report beside the plots.

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use secnet_sim::emulate::{self, Config};
use secnet_sim::paper::Params;
use secnet_sim::{Figure, write_figure};
use std::path::PathBuf;

/// Simulation commands.
#[derive(Subcommand)]
pub enum SimCmd {
    /// Figure 4: vulnerability against shared rules for λ = 0.2, 0.4, 0.6, 0.8.
    Fig4(FigArgs),
    /// Figure 5: revenue against shared rules for rule quality α_q = 0.5, 0.7, 0.95.
    Fig5(FigArgs),
    /// Figure 6: revenue against shared rules for price level α_p = 1.05, 1.5, 2.
    Fig6(FigArgs),
    /// Measure it: N Private Data Centers train detectors on their own NSL-KDD streams, sell
    /// and buy them as security rules on the real contract; vulnerability, false positives
    /// and revenue against shared rules, with controls, plots and a report.
    Rules(RulesArgs),
}

/// Arguments of the figure commands.
#[derive(Args)]
pub struct FigArgs {
    /// The output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `secnet sim rules`.
#[derive(Args)]
pub struct RulesArgs {
    /// Private Data Centers.
    #[arg(long, default_value_t = Config::default().nodes)]
    pub nodes: usize,
    /// Seeds (1..=N).
    #[arg(long, default_value_t = Config::default().seeds)]
    pub seeds: u64,
    /// Records each node trains on.
    #[arg(long, default_value_t = Config::default().rows_per_node)]
    pub rows_per_node: usize,
    /// Rules a node keeps installed.
    #[arg(long, default_value_t = Config::default().slots)]
    pub slots: usize,
    /// Training epochs per detector.
    #[arg(long, default_value_t = Config::default().epochs)]
    pub epochs: usize,
    /// NSL-KDD records.
    #[arg(long, default_value = "../shared/data/nsl-kdd/KDDTrain+_20Percent.txt")]
    pub data: PathBuf,
    /// The output directory.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: SimCmd) -> anyhow::Result<()> {
    let params = Params::default();
    match cmd {
        SimCmd::Fig4(a) => figure(Figure::Fig4, &params, &a.out),
        SimCmd::Fig5(a) => figure(Figure::Fig5, &params, &a.out),
        SimCmd::Fig6(a) => figure(Figure::Fig6, &params, &a.out),
        SimCmd::Rules(a) => rules(&a, &params),
    }
}

fn figure(f: Figure, params: &Params, out: &std::path::Path) -> anyhow::Result<()> {
    let files = write_figure(f, params, out)?;
    super::print_json(&serde_json::json!({ "figure": f.name(), "files": files }))
}

fn rules(a: &RulesArgs, params: &Params) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.data)
        .with_context(|| format!("reading {}", a.data.display()))?;
    let (records, malformed) = emulate::parse_nsl(&text);
    if malformed > 0 {
        eprintln!(
            "warning: {malformed} malformed lines of {} not used",
            a.data.display()
        );
    }
    let cfg = Config {
        nodes: a.nodes,
        seeds: a.seeds,
        rows_per_node: a.rows_per_node,
        slots: a.slots,
        epochs: a.epochs,
        ..Config::default()
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let bar = ProgressBar::new(emulate::steps(&cfg));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("training detectors and trading rules");
    let start = std::time::Instant::now();
    let outcome = emulate::run(&records, &cfg, &mut || bar.inc(1))
        .map_err(|e| anyhow::anyhow!("the emulation failed: {e}"))?;
    bar.finish_and_clear();
    for f in [Figure::Fig4, Figure::Fig5, Figure::Fig6] {
        write_figure(f, params, &a.out)?;
    }
    secnet_sim::report::write_emulation(
        &a.out,
        &cfg,
        &outcome,
        params,
        &a.data.display().to_string(),
    )?;
    let last = |points: &[emulate::Point]| {
        secnet_sim::report::by_step(points, |p| p.vulnerability)
            .last()
            .map(|(_, m, h)| serde_json::json!({ "mean": m, "ci95": h }))
    };
    super::print_json(&serde_json::json!({
        "out": a.out,
        "seconds": start.elapsed().as_secs_f64(),
        "config": cfg,
        "vulnerability_all_shared": {
            "sharing": last(&outcome.sharing),
            "no_sharing": last(&outcome.no_sharing),
            "random_rules": last(&outcome.random_rules),
        },
        "report": a.out.join("report.md"),
    }))
}
