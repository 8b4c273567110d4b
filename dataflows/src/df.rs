//! DF — the Decision Fabric (SPEC §8): bundles, scoring, posture, decision ids, action intents.

use serde::{Deserialize, Serialize};

use tidemark_operators::decision::{Decision, Posture};
use tidemark_operators::hashing::{sha256_hex, sha256_hex32};

/// DF policy section (`[df]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DfPolicy {
    /// Revision. Default 1.
    pub revision: u32,
    /// Active bundle: `profiles/bundles/<bundle>.toml`. Default `default`.
    pub bundle: String,
    /// `p >= review_threshold` → REVIEW. Default 0.5.
    pub review_threshold: f64,
    /// `p >= block_threshold` → BLOCK. Default 0.9.
    pub block_threshold: f64,
    /// SAFE posture fallback: REVIEW when `amount_minor >=` this, else ALLOW. Default 50000.
    pub safe_review_amount_minor: i64,
}

impl Default for DfPolicy {
    fn default() -> Self {
        DfPolicy {
            revision: 1,
            bundle: "default".into(),
            review_threshold: 0.5,
            block_threshold: 0.9,
            safe_review_amount_minor: 50_000,
        }
    }
}

/// Per-feature transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// `x`.
    Identity,
    /// `ln(1 + max(x, 0))`.
    Log1p,
}

/// One bundle feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFeature {
    /// Feature name (an OFP feature, `cluster_size` or `cluster_cards`).
    pub name: String,
    /// Transform.
    pub transform: Transform,
    /// Weight.
    pub weight: f64,
    /// Reason code reported when this feature is among the top contributions.
    pub reason: String,
}

/// A scoring bundle (`profiles/bundles/*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Bundle id.
    pub id: String,
    /// Bundle version.
    pub version: String,
    /// Intercept.
    pub intercept: f64,
    /// Temperature (> 0).
    pub temperature: f64,
    /// Features in scoring order.
    pub features: Vec<BundleFeature>,
}

/// A bundle with the sha256 of its file bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedBundle {
    /// The bundle.
    pub bundle: Bundle,
    /// sha256 hex of the file bytes.
    pub digest: String,
}

impl LoadedBundle {
    /// Parses bundle TOML bytes.
    pub fn parse(text: &str) -> Result<LoadedBundle, String> {
        let bundle: Bundle = toml_parse(text)?;
        if bundle.temperature.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err("bundle temperature must be > 0".into());
        }
        Ok(LoadedBundle {
            digest: sha256_hex(text.as_bytes()),
            bundle,
        })
    }
}

fn toml_parse(text: &str) -> Result<Bundle, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Graph features (masked under DEGRADED posture).
pub const GRAPH_FEATURES: [&str; 2] = ["cluster_size", "cluster_cards"];

/// The result of scoring one feature vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// ALLOW | REVIEW | BLOCK.
    pub decision: Decision,
    /// `sigmoid((intercept + Σ w·f(x)) / temperature)`.
    pub score: f64,
    /// Reason codes.
    pub reasons: Vec<String>,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Scores `values` (bundle order; `None` contributes 0) under `posture`.
pub fn score(
    b: &Bundle,
    policy: &DfPolicy,
    values: &[Option<i64>],
    posture: Posture,
    amount_minor: i64,
) -> Scored {
    let mut z = b.intercept;
    let mut contribs: Vec<(f64, &str, &str)> = Vec::new();
    for (f, v) in b.features.iter().zip(values) {
        let Some(x) = v else { continue };
        let fx = match f.transform {
            Transform::Identity => *x as f64,
            Transform::Log1p => ((*x).max(0) as f64).ln_1p(),
        };
        let c = f.weight * fx;
        z += c;
        contribs.push((c, f.name.as_str(), f.reason.as_str()));
    }
    let p = sigmoid(z / b.temperature);
    if posture == Posture::Safe {
        let decision = if amount_minor >= policy.safe_review_amount_minor {
            Decision::Review
        } else {
            Decision::Allow
        };
        return Scored {
            decision,
            score: p,
            reasons: vec!["SAFE_FALLBACK".into()],
        };
    }
    contribs.retain(|c| c.0 > 0.0);
    contribs.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let reasons = contribs.iter().take(3).map(|c| c.2.to_owned()).collect();
    let decision = if p >= policy.block_threshold {
        Decision::Block
    } else if p >= policy.review_threshold {
        Decision::Review
    } else {
        Decision::Allow
    };
    Scored {
        decision,
        score: p,
        reasons,
    }
}

/// `decision_id`: first 32 hex digits of sha256(`event_id 0x1F bundle_digest 0x1F policy_rev`).
pub fn decision_id(event_id: &str, bundle_digest: &str, policy_rev: &str) -> String {
    sha256_hex32(&[
        event_id.as_bytes(),
        bundle_digest.as_bytes(),
        policy_rev.as_bytes(),
    ])
}

/// Action intents for a decision: `(action, idempotency_key)`; the key is the first 32 hex
/// digits of sha256(`decision_id 0x1F action`).
pub fn action_intents(decision: Decision, decision_id: &str) -> Vec<(String, String)> {
    let action = match decision {
        Decision::Block => "decline_authorization",
        Decision::Review => "queue_manual_review",
        Decision::Allow => return Vec::new(),
    };
    let key = sha256_hex32(&[decision_id.as_bytes(), action.as_bytes()]);
    vec![(action.to_owned(), key)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Bundle {
        let f = |n: &str, w: f64| BundleFeature {
            name: n.into(),
            transform: Transform::Identity,
            weight: w,
            reason: n.to_uppercase(),
        };
        Bundle {
            id: "b".into(),
            version: "1".into(),
            intercept: -1.0,
            temperature: 1.0,
            features: vec![f("a", 1.0), f("b", 1.0), f("c", 2.0), f("d", -5.0)],
        }
    }

    #[test]
    fn scoring_reasons_and_thresholds() {
        let p = DfPolicy::default();
        let s = score(
            &bundle(),
            &p,
            &[Some(1), Some(1), None, Some(0)],
            Posture::Normal,
            0,
        );
        // z = -1 + 1 + 1 = 1 → p = 0.731
        assert!((s.score - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
        assert_eq!(s.decision, Decision::Review);
        // Ties broken by name; zero/negative contributions are not reasons.
        assert_eq!(s.reasons, vec!["A", "B"]);
        let s = score(
            &bundle(),
            &p,
            &[Some(1), Some(1), Some(3), None],
            Posture::Normal,
            0,
        );
        assert_eq!(s.decision, Decision::Block);
        assert_eq!(s.reasons, vec!["C", "A", "B"]);
        let s = score(
            &bundle(),
            &p,
            &[Some(1), Some(1), Some(3), None],
            Posture::Safe,
            10,
        );
        assert_eq!(
            (s.decision, s.reasons[0].as_str()),
            (Decision::Allow, "SAFE_FALLBACK")
        );
    }

    #[test]
    fn ids_are_stable_functions_of_their_inputs() {
        assert_eq!(decision_id("e", "d", "r"), decision_id("e", "d", "r"));
        assert_ne!(decision_id("e", "d", "r"), decision_id("e", "d", "r2"));
        assert!(action_intents(Decision::Allow, "x").is_empty());
        assert_eq!(
            action_intents(Decision::Block, "x")[0].0,
            "decline_authorization"
        );
    }
}
