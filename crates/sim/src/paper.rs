//! The paper's Section VI, recomputed from explicit models.
//!
//! The paper states the shape of its three figures and the parameters it varies, not the
//! formulas behind them. The models below are the simplest ones that follow its stated
//! assumptions; every parameter it leaves implicit is a field of [`Params`] with its reason.
//!
//! **Figure 4 — vulnerability against shared rules, security factor λ.** DDoS attacks
//! arrive independently, so their number in a period is Poisson with mean λ (the paper's
//! "security factor": the severity, i.e. frequency, of attacks). Every attacked user shares
//! the rule it learned, and each shared rule independently stops a given attack with
//! probability `c` (its coverage of the attack variants in circulation). An attack passes
//! `n` shared rules with probability `(1 − c)^n`; by Poisson thinning the attacks that pass
//! are Poisson with mean `λ (1 − c)^n`, and the probability that SecNet is successfully
//! attacked in the period is
//!
//! ```text
//! V(n; λ) = 1 − exp(−λ (1 − c)^n)
//! ```
//!
//! `V` is in `[0, 1)`, starts at `1 − e^−λ` and never rises with `n`.
//!
//! **Figure 5 — a contributor's revenue against shared rules, quality α_q.** Before the
//! market has enough rules to compare (`n ≤ n₀`), each shared rule earns its contributor in
//! proportion to how much of an attack it blocks: the slope is α_q, as the paper sets it.
//! Once there are `n₀` rules, buyers compare quality and the market concentrates on the best
//! (the paper's "quality effect"): a contributor's share of purchases becomes proportional
//! to `α_q^k` (a Luce choice rule with quality sensitivity `k`), normalised by the mean over
//! the contributors in the market, so
//!
//! ```text
//! R(n) = α_q · n                                   for n ≤ n₀
//! R(n) = α_q · n₀ + α_q · (α_q^k / mean_j α_j^k) · (n − n₀)   for n > n₀
//! ```
//!
//! The curves are piecewise linear, bend at `n₀`, and after it the best contributor's slope
//! exceeds every other's.
//!
//! **Figure 6 — revenue against shared rules, price level α_p** (price over fair value
//! `v`). Before `n₀` buyers have no substitute and buy at any price: slope `α_p · v · s₀`
//! where `s₀` is the share of buyers who buy. After it they choose between this rule and a
//! similar one at fair value with a logit rule of price sensitivity `η`, so this rule keeps
//! `P(α_p) = 1 / (1 + e^{η (α_p − 1)})` of them at margin `α_p · v`:
//!
//! ```text
//! R(n) = α_p · v · s₀ · n                                 for n ≤ n₀
//! R(n) = α_p · v · s₀ · n₀ + α_p · v · 2P(α_p) · s₀ · (n − n₀)   for n > n₀
//! ```
//!
//! (`2P` is 1 at fair price: a fairly priced rule keeps its buyers.) Overpriced rules lose
//! them: after `n₀` the slope falls as α_p grows whenever `η` exceeds ~2.

use serde::Serialize;

/// The parameters the paper leaves implicit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// Figure 4: the chance that one shared rule stops a given DDoS attack. 0.05: a rule
    /// learned from one attack covers a small share of the variants in circulation, so that
    /// it takes tens of rules, the range the paper plots, to make attacks rare.
    pub coverage: f64,
    /// Shared rules plotted: 0 to this.
    pub max_rules: u32,
    /// Figures 5 and 6: the number of shared rules from which buyers can compare (the
    /// paper's threshold). 40% of the plotted range, so both phases show.
    pub threshold: u32,
    /// Figure 5: quality sensitivity `k` of buyers after the threshold. 8: the best rule
    /// (0.95) takes most of the market from rules of 0.7 and 0.5, as the paper describes.
    pub quality_sensitivity: f64,
    /// Figure 6: price sensitivity `η` of buyers choosing between substitutes. 4: a 50%
    /// markup keeps 12% of buyers, a 100% markup 2%.
    pub price_sensitivity: f64,
    /// Figure 6: the fair value `v` of one rule (revenue units).
    pub fair_value: f64,
    /// Figure 6: the share `s₀` of buyers who buy before the threshold.
    pub base_share: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            coverage: 0.05,
            max_rules: 100,
            threshold: 40,
            quality_sensitivity: 8.0,
            price_sensitivity: 4.0,
            fair_value: 1.0,
            base_share: 1.0,
        }
    }
}

/// The paper's security factors.
pub const LAMBDAS: [f64; 4] = [0.2, 0.4, 0.6, 0.8];
/// The paper's quality levels.
pub const QUALITIES: [f64; 3] = [0.5, 0.7, 0.95];
/// The paper's price levels.
pub const PRICE_LEVELS: [f64; 3] = [1.05, 1.5, 2.0];

/// One row of a figure's table: the varied parameter, the number of shared rules and the
/// value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Row {
    /// λ, α_q or α_p.
    pub parameter: f64,
    /// Shared rules.
    pub shared_rules: u32,
    /// Vulnerability or revenue.
    pub value: f64,
}

/// Figure 4's `V(n; λ)`.
pub fn vulnerability(p: &Params, lambda: f64, n: u32) -> f64 {
    let passing = lambda * (1.0 - p.coverage).powf(f64::from(n));
    (1.0 - (-passing).exp()).clamp(0.0, 1.0)
}

/// Figure 5's `R(n)` for quality `q` among the paper's quality levels.
pub fn revenue_quality(p: &Params, q: f64, n: u32) -> f64 {
    let mean = QUALITIES
        .iter()
        .map(|a| a.powf(p.quality_sensitivity))
        .sum::<f64>()
        / QUALITIES.len() as f64;
    let before = f64::from(n.min(p.threshold));
    let after = f64::from(n.saturating_sub(p.threshold));
    q * before + q * (q.powf(p.quality_sensitivity) / mean) * after
}

/// The logit share `P(α)` of buyers who keep a rule priced at `α` times fair value.
pub fn keep_share(p: &Params, alpha: f64) -> f64 {
    1.0 / (1.0 + (p.price_sensitivity * (alpha - 1.0)).exp())
}

/// Figure 6's `R(n)` for price level `α`.
pub fn revenue_price(p: &Params, alpha: f64, n: u32) -> f64 {
    let margin = alpha * p.fair_value * p.base_share;
    let before = f64::from(n.min(p.threshold));
    let after = f64::from(n.saturating_sub(p.threshold));
    margin * before + margin * 2.0 * keep_share(p, alpha) * after
}

fn table(parameters: &[f64], max: u32, f: impl Fn(f64, u32) -> f64) -> Vec<Row> {
    parameters
        .iter()
        .flat_map(|&parameter| {
            let f = &f;
            (0..=max).map(move |n| Row {
                parameter,
                shared_rules: n,
                value: f(parameter, n),
            })
        })
        .collect()
}

/// Figure 4's table.
pub fn fig4(p: &Params) -> Vec<Row> {
    table(&LAMBDAS, p.max_rules, |l, n| vulnerability(p, l, n))
}

/// Figure 5's table.
pub fn fig5(p: &Params) -> Vec<Row> {
    table(&QUALITIES, p.max_rules, |q, n| revenue_quality(p, q, n))
}

/// Figure 6's table.
pub fn fig6(p: &Params) -> Vec<Row> {
    table(&PRICE_LEVELS, p.max_rules, |a, n| revenue_price(p, a, n))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index tables they built")]
mod tests {
    use super::*;

    fn slope(rows: &[Row], parameter: f64, n: u32) -> f64 {
        let at = |k: u32| {
            rows.iter()
                .find(|r| r.parameter == parameter && r.shared_rules == k)
                .map_or(f64::NAN, |r| r.value)
        };
        at(n + 1) - at(n)
    }

    #[test]
    fn vulnerability_is_a_probability_that_never_rises_with_sharing() {
        let p = Params::default();
        let rows = fig4(&p);
        assert_eq!(rows.len(), LAMBDAS.len() * (p.max_rules as usize + 1));
        for l in LAMBDAS {
            let curve: Vec<f64> = rows
                .iter()
                .filter(|r| r.parameter == l)
                .map(|r| r.value)
                .collect();
            assert!((curve[0] - (1.0 - (-l).exp())).abs() < 1e-12);
            assert!(curve.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(curve.windows(2).all(|w| w[1] <= w[0]));
            assert!(
                *curve.last().unwrap_or(&1.0) < curve[0] / 20.0,
                "dramatic drop"
            );
        }
        // More severe threats, more vulnerability, at every n.
        for n in 0..=p.max_rules {
            assert!(vulnerability(&p, 0.8, n) > vulnerability(&p, 0.2, n));
        }
    }

    #[test]
    fn revenue_bends_at_the_threshold_and_quality_wins_after_it() {
        let p = Params::default();
        let rows = fig5(&p);
        let t = p.threshold;
        for q in QUALITIES {
            assert!((slope(&rows, q, 0) - q).abs() < 1e-12, "slope α_q before");
            assert!((slope(&rows, q, t - 1) - q).abs() < 1e-12);
            assert!((slope(&rows, q, t) - q).abs() > 1e-3, "bends at n₀");
        }
        assert!(slope(&rows, 0.95, t) > 2.0 * slope(&rows, 0.7, t));
        assert!(slope(&rows, 0.7, t) > slope(&rows, 0.5, t));
        assert!(slope(&rows, 0.95, t) > slope(&rows, 0.95, t - 1), "steeper");
        assert!(slope(&rows, 0.5, t) < slope(&rows, 0.5, t - 1), "flatter");
    }

    #[test]
    fn overpriced_rules_lose_their_buyers_after_the_threshold() {
        let p = Params::default();
        let rows = fig6(&p);
        let t = p.threshold;
        // Before: a higher price earns more per sale.
        assert!(slope(&rows, 2.0, 0) > slope(&rows, 1.05, 0));
        // After: buyers move to substitutes, and the highest price earns least.
        assert!(slope(&rows, 1.05, t) > slope(&rows, 1.5, t));
        assert!(slope(&rows, 1.5, t) > slope(&rows, 2.0, t));
        let end = |a: f64| revenue_price(&p, a, p.max_rules);
        assert!(end(1.05) > end(2.0));
        assert!(
            (2.0 * keep_share(&p, 1.0) - 1.0).abs() < 1e-12,
            "fair price keeps all"
        );
    }
}
